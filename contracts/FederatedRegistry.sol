// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title FederatedRegistry: an audit trail for federated learning rounds (registry v4).
/// @notice One registry per run, bound at deploy to the run's digest (its resolved
/// configuration, code commit, data and test-split digests and a random nonce). The deployer
/// (owner) registers the federation before the first round and names the aggregator, a
/// separate key. A registry runs in one of two modes, fixed by how the federation is
/// registered:
///
/// - per-node (`registerNodes`): every node is on chain (index, address, status, data
///   digest, sample count); each node sends its own `registerData` and, every round it is in
///   the cohort, its own `submitUpdate`, bound to the run and to its registered sample count;
///   the aggregator opens each round with the cohort's indices and commits it with the
///   accepted indices, and the contract gives every submitter left out a rejection (and
///   revokes a node at `maxRejections`). Gas grows with the cohort.
/// - batched (`registerNodeRoot`): the federation, the nodes' data registrations and every
///   round's signed updates are Merkle roots. Each node signs its data registration and its
///   update off chain (EIP-712 typed data, domain "bflsim FederatedRegistry" / "3" / chain /
///   this contract); the aggregator commits one root per round over the signed leaves. Gas per
///   round does not depend on the cohort. The chain proves the order of rounds, the model
///   chain (each round opens from the model the previous one committed) and which roots the
///   aggregator committed to, when; that each leaf carries a valid signature of its node, that
///   the cohort held only registered, unrevoked nodes and that rejections were counted moves to
///   the audit (the registry checks signatures and proofs on request: `recoverUpdate`,
///   `recoverData`, `proves`).
///
/// Node indices are uint32. Rounds open in sequence, each once the previous one is committed
/// and from the global model it committed.
///
/// The closed loop (per-node mode): the owner registers the IoT devices behind each edge node
/// (`registerDevices`; a device may sit behind several) and the quarantine rule
/// (`setQuarantineRule`: alerts per edge node, and how many distinct edge nodes must reach it).
/// An edge node that sees a device's traffic turn malicious sends `alert` with the digest of
/// the window of flows it scored; the contract counts the alerts per (device, edge node) and
/// quarantines the device when `quorum` edge nodes have each sent `alertsPerNode` of them. The
/// aggregator, which re-scores every window before relaying its alert, disputes a false one
/// (`disputeAlert`): the alert is not counted and the edge node gets a rejection, so an edge
/// node that keeps raising false alerts is revoked by the rule of `maxRejections`.
/// @dev Per-node mode keeps, for every open round, words of 127 two-bit cells (member,
/// submitted) keyed by index / 127, with bit 255 of each word set while the round is open: a
/// `submitUpdate` then reads and writes one slot that is already non-zero (2,900 gas rather
/// than 22,100). The cohort itself is only hashed in storage (`cohortDigest`, keccak256 of the
/// 32-byte words of its sorted indices) and listed in the `RoundOpened` event; `commitRound`
/// is given it again and walks it. A node's index, status, rejections, data timestamp and
/// registered sample count share one slot.
contract FederatedRegistry {
    uint256 private constant OPEN = 1 << 255;
    uint256 private constant CELLS = 127; // two-bit cells per pending word (bits 0..253)

    uint8 private constant NONE = 0;
    uint8 private constant OPENED = 1;
    uint8 private constant COMMITTED = 2;

    uint8 public constant PER_NODE = 1;
    uint8 public constant BATCHED = 2;

    bytes32 private constant DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "Update(bytes32 run,uint32 round,uint32 node,bytes32 updateDigest,uint32 numSamples)"
    );
    bytes32 public constant DATA_TYPEHASH = keccak256(
        "Data(bytes32 run,uint32 node,bytes32 dataDigest,uint64 timestamp,uint32 numSamples)"
    );

    struct Node {
        uint32 index;
        bool registered;
        bool active;
        uint32 rejections;
        uint64 dataTimestamp;
        uint32 numSamples; // the size of the node's registered data batch
    }

    struct Round {
        uint8 status;
        bool batched;
        uint32 cohortSize;
        uint32 submitted; // set at commit
        uint32 accepted; // set at commit
        bytes32 cohortDigest; // per-node: keccak256 of the sorted indices; batched: Merkle root
        bytes32 newGlobalDigest;
        bytes32 updatesRoot; // batched: Merkle root of the round's signed updates
    }

    // No immutables: the deployed code is then the same for every deployment, so a client can
    // recognise the contract by the hash of its code.
    address public owner;
    address public pendingOwner;
    address public aggregator; // shares its slot with maxRejections, lastRound and mode
    uint32 public maxRejections;
    uint32 public lastRound; // the last round opened (0: none yet)
    uint8 public mode; // 0 until the federation is registered, then PER_NODE or BATCHED
    bytes32 public runDigest;
    bytes32 public initialGlobalDigest; // the model round 1 opened from
    uint32 public nodeCount;
    uint32 public activeCount;
    uint32 public dataCount; // batched: leaves under dataRoot
    bytes32 public nodesRoot; // batched: Merkle root of (index, address) leaves
    bytes32 public dataRoot; // batched: Merkle root of the nodes' signed data registrations

    mapping(address => Node) private _nodes;
    mapping(address => bytes32) private _dataDigest;
    mapping(uint256 => address) public nodeAt;
    mapping(uint256 => uint256) private _activeWords; // bit (index & 255) of word (index >> 8)
    mapping(uint32 => mapping(uint256 => uint256)) private _pending;
    mapping(uint32 => Round) private _rounds;

    struct Device {
        bool registered;
        bool quarantined;
        uint32 alerters; // edge nodes that have sent alertsPerNode alerts about it
    }

    uint32 public alertsPerNode; // 0: no quarantine rule set (alerts are refused)
    uint32 public quorum;
    uint32 public deviceCount;
    uint32 public quarantinedCount;
    mapping(uint32 => Device) private _devices;
    mapping(uint32 => mapping(uint32 => uint32)) private _alerts; // device => edge node => alerts; +1: behind it

    event RunConfigured(bytes32 runDigest, uint32 maxRejections);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event AggregatorSet(address indexed aggregator);
    event NodeRegistered(address indexed node, uint32 index);
    event NodeRootRegistered(bytes32 nodesRoot, uint32 nodeCount);
    event DataRegistered(address indexed node, bytes32 digest, uint64 timestamp, uint32 numSamples);
    event DataRootRegistered(bytes32 dataRoot, uint32 dataCount);
    event RoundOpened(uint32 indexed round, bytes32 globalDigest, uint32[] cohort);
    event UpdateSubmitted(
        uint32 indexed round, address indexed node, bytes32 updateDigest, uint32 numSamples
    );
    event RoundCommitted(
        uint32 indexed round,
        bytes32 newGlobalDigest,
        uint32[] accepted,
        bytes32 scoresDigest,
        bytes32 evaluationDigest
    );
    event BatchOpened(uint32 indexed round, bytes32 globalDigest, bytes32 cohortRoot, uint32 cohortSize);
    event BatchCommitted(
        uint32 indexed round,
        bytes32 newGlobalDigest,
        bytes32 updatesRoot,
        uint32 submitted,
        uint32 accepted,
        bytes32 scoresDigest,
        bytes32 evaluationDigest
    );
    event NodeRejected(uint32 indexed round, address indexed node, uint32 rejections);
    event NodeRevoked(address indexed node, uint32 round, uint32 rejections);
    event QuarantineRuleSet(uint32 alertsPerNode, uint32 quorum);
    event DeviceRegistered(uint32 indexed device, uint32 indexed edgeNode);
    event DeviceAlerted(
        uint32 indexed device, address indexed node, bytes32 windowDigest, uint32 score, uint32 alerts
    );
    event DeviceQuarantined(uint32 indexed device, uint32 alerters);
    event AlertDisputed(uint32 indexed device, address indexed node, bytes32 windowDigest, uint32 rejections);

    error NotOwner(address caller);
    error NotPendingOwner(address caller);
    error NotAggregator(address caller);
    error ZeroAddress();
    error LengthMismatch(uint256 nodes, uint256 indices);
    error IndexTaken(uint32 index);
    error AlreadyRegistered(address node);
    error RegistrationClosed(uint32 lastRound);
    error WrongMode(uint8 mode);
    error EmptyFederation();
    error UnknownNode(address node);
    error NodeIsRevoked(address node);
    error ZeroSamples(address node);
    error EmptyCohort(uint32 round);
    error CohortNotSorted(uint32 round, uint32 index);
    error InactiveInCohort(uint32 round, uint32 index);
    error CohortMismatch(uint32 round);
    error RoundOutOfOrder(uint32 round, uint32 expected);
    error PreviousRoundOpen(uint32 round);
    error GlobalDigestMismatch(uint32 round, bytes32 expected, bytes32 given);
    error RoundNotOpen(uint32 round);
    error WrongRun(bytes32 runDigest);
    error SampleCountMismatch(address node, uint32 claimed, uint32 registered);
    error NotInCohort(uint32 round, address node);
    error AlreadySubmitted(uint32 round, address node);
    error AcceptedWithoutSubmission(uint32 round, uint32 index);
    error AcceptedNotInCohort(uint32 round, uint32 index);
    error BatchCountsInvalid(uint32 round, uint32 submitted, uint32 accepted, uint32 cohortSize);
    error InvalidQuarantineRule(uint32 alertsPerNode, uint32 quorum);
    error NoQuarantineRule();
    error UnknownEdgeNode(uint32 index);
    error UnknownDevice(uint32 device);
    error DeviceAlreadyBehind(uint32 device, uint32 edgeNode);
    error DeviceNotBehindNode(uint32 device, address node);
    error DeviceIsQuarantined(uint32 device);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyAggregator() {
        if (msg.sender != aggregator) revert NotAggregator(msg.sender);
        _;
    }

    /// @param runDigest_ bflsim.hashing.run_digest of the run's facts (see contracts/README.md).
    constructor(uint32 maxRejections_, bytes32 runDigest_) {
        owner = msg.sender;
        aggregator = msg.sender;
        maxRejections = maxRejections_;
        runDigest = runDigest_;
        emit OwnershipTransferred(address(0), msg.sender);
        emit RunConfigured(runDigest_, maxRejections_);
        emit AggregatorSet(msg.sender);
    }

    // ---- owner ----------------------------------------------------------------------

    /// @notice Step one of two: `newOwner` becomes owner when it calls acceptOwnership.
    /// address(0) cancels a pending transfer.
    function transferOwnership(address newOwner) external onlyOwner {
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(msg.sender, newOwner);
    }

    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner(msg.sender);
        address previous = owner;
        owner = msg.sender;
        pendingOwner = address(0);
        emit OwnershipTransferred(previous, msg.sender);
    }

    function setAggregator(address aggregator_) external onlyOwner {
        if (aggregator_ == address(0)) revert ZeroAddress();
        aggregator = aggregator_;
        emit AggregatorSet(aggregator_);
    }

    /// @notice Per-node mode: register nodes (in as many calls as blocks need) before round 1.
    function registerNodes(address[] calldata nodes, uint32[] calldata indices)
        external
        onlyOwner
    {
        if (lastRound != 0) revert RegistrationClosed(lastRound);
        if (mode == BATCHED) revert WrongMode(mode);
        if (nodes.length != indices.length) revert LengthMismatch(nodes.length, indices.length);
        mode = PER_NODE;
        for (uint256 k = 0; k < nodes.length; ++k) {
            address node = nodes[k];
            uint32 index = indices[k];
            if (node == address(0)) revert ZeroAddress();
            if (nodeAt[index] != address(0)) revert IndexTaken(index);
            if (_nodes[node].registered) revert AlreadyRegistered(node);
            _nodes[node] = Node({
                index: index,
                registered: true,
                active: true,
                rejections: 0,
                dataTimestamp: 0,
                numSamples: 0
            });
            nodeAt[index] = node;
            _activeWords[index >> 8] |= uint256(1) << (index & 255);
            emit NodeRegistered(node, index);
        }
        nodeCount += uint32(nodes.length);
        activeCount += uint32(nodes.length);
    }

    /// @notice Batched mode: the federation as the Merkle root of its (index, address) leaves
    /// (bflsim.ledger.merkle.node_leaf), once, before round 1.
    function registerNodeRoot(bytes32 root, uint32 count) external onlyOwner {
        if (mode != 0) revert WrongMode(mode);
        if (count == 0) revert EmptyFederation();
        mode = BATCHED;
        nodesRoot = root;
        nodeCount = count;
        activeCount = count;
        emit NodeRootRegistered(root, count);
    }

    /// @notice Batched mode: the Merkle root of the nodes' signed data registrations
    /// (bflsim.ledger.merkle.data_leaf); a later call before round 1 replaces it.
    function registerDataRoot(bytes32 root, uint32 count) external onlyOwner {
        if (mode != BATCHED) revert WrongMode(mode);
        if (lastRound != 0) revert RegistrationClosed(lastRound);
        dataRoot = root;
        dataCount = count;
        emit DataRootRegistered(root, count);
    }

    // ---- edge nodes (per-node mode) ---------------------------------------------------

    /// @param digest bflsim.hashing.data_digest of the node's batch (features, labels,
    /// timestamp, node index).
    /// @param numSamples the batch's rows: the weight every later update of the node claims.
    function registerData(bytes32 digest, uint64 timestamp, uint32 numSamples) external {
        Node storage node = _activeNode(msg.sender);
        if (numSamples == 0) revert ZeroSamples(msg.sender);
        node.dataTimestamp = timestamp;
        node.numSamples = numSamples;
        _dataDigest[msg.sender] = digest;
        emit DataRegistered(msg.sender, digest, timestamp, numSamples);
    }

    /// @param runDigest_ must be this registry's runDigest: a signed update of another run
    /// (same chain, same keys) cannot be replayed here.
    /// @param numSamples must be the node's registered sample count.
    function submitUpdate(bytes32 runDigest_, uint32 round, bytes32 updateDigest, uint32 numSamples)
        external
    {
        Node memory node = _nodes[msg.sender];
        if (!node.active) {
            if (!node.registered) revert UnknownNode(msg.sender);
            revert NodeIsRevoked(msg.sender);
        }
        if (runDigest_ != runDigest) revert WrongRun(runDigest_);
        if (numSamples != node.numSamples || numSamples == 0) {
            revert SampleCountMismatch(msg.sender, numSamples, node.numSamples);
        }
        mapping(uint256 => uint256) storage pending = _pending[round];
        uint256 slot = node.index / CELLS;
        uint256 shift = 2 * (node.index % CELLS);
        uint256 word = pending[slot];
        if (word & OPEN == 0) {
            Round storage r = _rounds[round];
            if (r.status != OPENED || r.batched) revert RoundNotOpen(round);
            revert NotInCohort(round, msg.sender);
        }
        if ((word >> shift) & 1 == 0) revert NotInCohort(round, msg.sender);
        if ((word >> shift) & 2 != 0) revert AlreadySubmitted(round, msg.sender);
        pending[slot] = word | (uint256(2) << shift);
        emit UpdateSubmitted(round, msg.sender, updateDigest, numSamples);
    }

    // ---- the closed loop: devices, alerts, quarantine (per-node mode) --------------------

    /// @notice A device is quarantined once `quorum` distinct edge nodes have each sent
    /// `alertsPerNode` alerts about it. Set once devices can alert; a later call applies to
    /// the alerts after it.
    function setQuarantineRule(uint32 alertsPerNode_, uint32 quorum_) external onlyOwner {
        if (alertsPerNode_ == 0 || quorum_ == 0) revert InvalidQuarantineRule(alertsPerNode_, quorum_);
        alertsPerNode = alertsPerNode_;
        quorum = quorum_;
        emit QuarantineRuleSet(alertsPerNode_, quorum_);
    }

    /// @notice Device `devices[k]` sits behind the registered edge node `edgeNodes[k]`.
    function registerDevices(uint32[] calldata devices, uint32[] calldata edgeNodes) external onlyOwner {
        if (mode != PER_NODE) revert WrongMode(mode);
        if (devices.length != edgeNodes.length) revert LengthMismatch(devices.length, edgeNodes.length);
        for (uint256 k = 0; k < devices.length; ++k) {
            uint32 device = devices[k];
            uint32 edge = edgeNodes[k];
            if (nodeAt[edge] == address(0)) revert UnknownEdgeNode(edge);
            if (_alerts[device][edge] != 0) revert DeviceAlreadyBehind(device, edge);
            _alerts[device][edge] = 1;
            if (!_devices[device].registered) {
                _devices[device].registered = true;
                deviceCount += 1;
            }
            emit DeviceRegistered(device, edge);
        }
    }

    /// @notice An edge node's alert about a device behind it.
    /// @param runDigest_ must be this registry's runDigest (no replay from another run).
    /// @param windowDigest bflsim.traffic.window_digest of the flows the edge node scored.
    /// @param score the window's attack verdicts.
    function alert(bytes32 runDigest_, uint32 device, bytes32 windowDigest, uint32 score) external {
        Node storage node = _activeNode(msg.sender);
        if (runDigest_ != runDigest) revert WrongRun(runDigest_);
        uint32 needed = alertsPerNode;
        if (needed == 0) revert NoQuarantineRule();
        Device storage record = _devices[device];
        if (!record.registered) revert UnknownDevice(device);
        uint32 count = _alerts[device][node.index];
        if (count == 0) revert DeviceNotBehindNode(device, msg.sender);
        if (record.quarantined) revert DeviceIsQuarantined(device);
        _alerts[device][node.index] = count + 1;
        emit DeviceAlerted(device, msg.sender, windowDigest, score, count);
        if (count == needed) {
            uint32 alerters = record.alerters + 1;
            record.alerters = alerters;
            if (alerters >= quorum) {
                record.quarantined = true;
                quarantinedCount += 1;
                emit DeviceQuarantined(device, alerters);
            }
        }
    }

    /// @notice The aggregator re-scored an edge node's alert and found it false: the alert is
    /// not relayed, and the edge node gets a rejection (revoked at `maxRejections`).
    function disputeAlert(uint32 device, uint32 edgeNode, bytes32 windowDigest) external onlyAggregator {
        if (_alerts[device][edgeNode] == 0) revert DeviceNotBehindNode(device, nodeAt[edgeNode]);
        address addr = nodeAt[edgeNode];
        Node storage node = _nodes[addr];
        uint32 count = node.rejections + 1;
        node.rejections = count;
        emit AlertDisputed(device, addr, windowDigest, count);
        _revokeAt(addr, edgeNode, count, lastRound);
    }

    /// @return registered whether the device is registered; quarantined; alerters (edge nodes
    /// that reached alertsPerNode); behind whether it sits behind `edgeNode`; alerts the
    /// alerts `edgeNode` sent about it.
    function deviceInfo(uint32 device, uint32 edgeNode)
        external
        view
        returns (bool registered, bool quarantined, uint32 alerters, bool behind, uint32 alerts)
    {
        Device memory record = _devices[device];
        uint32 stored = _alerts[device][edgeNode];
        return (record.registered, record.quarantined, record.alerters, stored != 0, stored == 0 ? 0 : stored - 1);
    }

    // ---- aggregator (per-node mode) ---------------------------------------------------

    /// @param cohort the round's nodes, strictly increasing indices of active nodes.
    function openRound(uint32 round, bytes32 globalDigest, uint32[] calldata cohort)
        external
        onlyAggregator
    {
        if (mode != PER_NODE) revert WrongMode(mode);
        if (cohort.length == 0) revert EmptyCohort(round);
        _sequence(round, globalDigest);
        mapping(uint256 => uint256) storage pending = _pending[round];
        uint256 slot = cohort[0] / CELLS;
        uint256 bits = OPEN;
        uint256 activeSlot = cohort[0] >> 8;
        uint256 active = _activeWords[activeSlot];
        for (uint256 k = 0; k < cohort.length; ++k) {
            uint32 index = cohort[k];
            if (k > 0 && index <= cohort[k - 1]) revert CohortNotSorted(round, index);
            if (index / CELLS != slot) {
                pending[slot] = bits;
                slot = index / CELLS;
                bits = OPEN;
            }
            if (index >> 8 != activeSlot) {
                activeSlot = index >> 8;
                active = _activeWords[activeSlot];
            }
            if (active & (uint256(1) << (index & 255)) == 0) revert InactiveInCohort(round, index);
            bits |= uint256(1) << (2 * (index % CELLS));
        }
        pending[slot] = bits;
        Round storage r = _rounds[round];
        r.status = OPENED;
        r.cohortSize = uint32(cohort.length);
        r.cohortDigest = keccak256(abi.encodePacked(cohort));
        emit RoundOpened(round, globalDigest, cohort);
    }

    /// @param cohort the round's cohort exactly as opened (checked against its digest).
    /// @param accepted strictly increasing indices of the nodes whose updates entered the
    /// aggregate: cohort members that submitted. Submitters left out get one rejection each.
    /// @param evaluationDigest bflsim.hashing.evaluation_digest of the new global model's
    /// confusion matrix on the run's test split (kept in the event only, like scoresDigest).
    function commitRound(
        uint32 round,
        bytes32 newGlobalDigest,
        uint32[] calldata cohort,
        uint32[] calldata accepted,
        bytes32 scoresDigest,
        bytes32 evaluationDigest
    ) external onlyAggregator {
        Round storage r = _rounds[round];
        if (r.status != OPENED || r.batched) revert RoundNotOpen(round);
        if (keccak256(abi.encodePacked(cohort)) != r.cohortDigest) revert CohortMismatch(round);
        uint32 submitted = _settle(round, cohort, accepted);
        r.status = COMMITTED;
        r.submitted = submitted;
        r.accepted = uint32(accepted.length);
        r.newGlobalDigest = newGlobalDigest;
        emit RoundCommitted(round, newGlobalDigest, accepted, scoresDigest, evaluationDigest);
    }

    // ---- aggregator (batched mode) ----------------------------------------------------

    /// @param cohortRoot Merkle root of the cohort's index leaves (bflsim.ledger.merkle.cohort_leaf).
    function openBatch(uint32 round, bytes32 globalDigest, bytes32 cohortRoot, uint32 cohortSize)
        external
        onlyAggregator
    {
        if (mode != BATCHED) revert WrongMode(mode);
        if (cohortSize == 0) revert EmptyCohort(round);
        _sequence(round, globalDigest);
        Round storage r = _rounds[round];
        r.status = OPENED;
        r.batched = true;
        r.cohortSize = cohortSize;
        r.cohortDigest = cohortRoot;
        emit BatchOpened(round, globalDigest, cohortRoot, cohortSize);
    }

    /// @param updatesRoot Merkle root of the round's signed updates, one leaf per update the
    /// aggregator received with a valid signature (bflsim.ledger.merkle.update_leaf: node,
    /// EIP-712 digest, signature, accepted or not).
    function commitBatch(
        uint32 round,
        bytes32 newGlobalDigest,
        bytes32 updatesRoot,
        uint32 submitted,
        uint32 accepted,
        bytes32 scoresDigest,
        bytes32 evaluationDigest
    ) external onlyAggregator {
        Round storage r = _rounds[round];
        if (r.status != OPENED || !r.batched) revert RoundNotOpen(round);
        if (accepted > submitted || submitted > r.cohortSize) {
            revert BatchCountsInvalid(round, submitted, accepted, r.cohortSize);
        }
        r.status = COMMITTED;
        r.submitted = submitted;
        r.accepted = accepted;
        r.newGlobalDigest = newGlobalDigest;
        r.updatesRoot = updatesRoot;
        emit BatchCommitted(
            round, newGlobalDigest, updatesRoot, submitted, accepted, scoresDigest, evaluationDigest
        );
    }

    // ---- views ----------------------------------------------------------------------

    function nodeInfo(address node)
        external
        view
        returns (
            bool registered,
            bool active,
            uint32 index,
            uint32 rejections,
            bytes32 dataDigest,
            uint64 dataTimestamp,
            uint32 numSamples
        )
    {
        Node storage n = _nodes[node];
        return (
            n.registered,
            n.active,
            n.index,
            n.rejections,
            _dataDigest[node],
            n.dataTimestamp,
            n.numSamples
        );
    }

    /// @notice Per-node mode: `count` words of the active set from word `first` (bit i of
    /// word w = node 256 w + i).
    function activeWords(uint256 first, uint256 count) external view returns (uint256[] memory words) {
        words = new uint256[](count);
        for (uint256 k = 0; k < count; ++k) words[k] = _activeWords[first + k];
    }

    /// @notice Per-node mode: whether node `index` is in round `round`'s cohort and submitted.
    function cell(uint32 round, uint32 index) external view returns (bool member, bool submitted) {
        uint256 bits = _pending[round][index / CELLS] >> (2 * (index % CELLS));
        return (bits & 1 != 0, bits & 2 != 0);
    }

    /// @return status 0 = never opened, 1 = open, 2 = committed.
    function roundInfo(uint32 round)
        external
        view
        returns (
            uint8 status,
            bool batched,
            uint32 cohortSize,
            uint32 submitted,
            uint32 accepted,
            bytes32 cohortDigest,
            bytes32 globalDigest,
            bytes32 newGlobalDigest,
            bytes32 updatesRoot
        )
    {
        Round storage r = _rounds[round];
        if (r.status != NONE) {
            globalDigest = round == 1 ? initialGlobalDigest : _rounds[round - 1].newGlobalDigest;
        }
        return (
            r.status,
            r.batched,
            r.cohortSize,
            r.submitted,
            r.accepted,
            r.cohortDigest,
            globalDigest,
            r.newGlobalDigest,
            r.updatesRoot
        );
    }

    /// @notice The EIP-712 domain separator nodes sign under in batched mode.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("bflsim FederatedRegistry"),
                keccak256("3"),
                block.chainid,
                address(this)
            )
        );
    }

    /// @notice The signer of an EIP-712 `Update` (address(0) for an invalid signature).
    function recoverUpdate(
        uint32 round,
        uint32 node,
        bytes32 updateDigest,
        uint32 numSamples,
        bytes calldata signature
    ) external view returns (address) {
        bytes32 structHash = keccak256(
            abi.encode(UPDATE_TYPEHASH, runDigest, round, node, updateDigest, numSamples)
        );
        return _recover(structHash, signature);
    }

    /// @notice The signer of an EIP-712 `Data` registration (address(0) for an invalid one).
    function recoverData(
        uint32 node,
        bytes32 dataDigest,
        uint64 timestamp,
        uint32 numSamples,
        bytes calldata signature
    ) external view returns (address) {
        bytes32 structHash = keccak256(
            abi.encode(DATA_TYPEHASH, runDigest, node, dataDigest, timestamp, numSamples)
        );
        return _recover(structHash, signature);
    }

    /// @notice Whether `proof` leads from `leaf` to `root` (pairs hashed in sorted order).
    function proves(bytes32 root, bytes32 leaf, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        bytes32 h = leaf;
        for (uint256 k = 0; k < proof.length; ++k) {
            bytes32 p = proof[k];
            h = h < p ? keccak256(abi.encodePacked(h, p)) : keccak256(abi.encodePacked(p, h));
        }
        return h == root;
    }

    // ---- internal -------------------------------------------------------------------

    /// @dev Rounds open in sequence (1, 2, ...), each once the previous one is committed and,
    /// after round 1, from the global model it committed.
    function _sequence(uint32 round, bytes32 globalDigest) private {
        uint32 previous = lastRound;
        if (round != previous + 1) revert RoundOutOfOrder(round, previous + 1);
        if (previous != 0) {
            Round storage last = _rounds[previous];
            if (last.status != COMMITTED) revert PreviousRoundOpen(previous);
            bytes32 expected = last.newGlobalDigest;
            if (globalDigest != expected) revert GlobalDigestMismatch(round, expected, globalDigest);
        } else {
            initialGlobalDigest = globalDigest;
        }
        lastRound = round;
    }

    /// @dev Walk the cohort and the accepted list together (both sorted): close the round's
    /// pending words, check every accepted node submitted, reject every other submitter.
    function _settle(uint32 round, uint32[] calldata cohort, uint32[] calldata accepted)
        private
        returns (uint32 submitted)
    {
        uint256 slot = type(uint256).max;
        uint256 bits;
        uint256 a = 0;
        for (uint256 k = 0; k < cohort.length; ++k) {
            uint32 index = cohort[k];
            if (index / CELLS != slot) {
                if (slot != type(uint256).max) _pending[round][slot] = bits & ~OPEN;
                slot = index / CELLS;
                bits = _pending[round][slot];
            }
            bool sent = (bits >> (2 * (index % CELLS))) & 2 != 0;
            if (a < accepted.length && accepted[a] == index) {
                if (!sent) revert AcceptedWithoutSubmission(round, index);
                ++a;
            } else if (sent) {
                _reject(round, index);
            }
            if (sent) ++submitted;
        }
        _pending[round][slot] = bits & ~OPEN;
        if (a != accepted.length) revert AcceptedNotInCohort(round, accepted[a]);
    }

    /// @dev One rejection for node `index`; revocation at the threshold.
    function _reject(uint32 round, uint32 index) private {
        address addr = nodeAt[index];
        Node storage node = _nodes[addr];
        uint32 count = node.rejections + 1;
        node.rejections = count;
        emit NodeRejected(round, addr, count);
        _revokeAt(addr, index, count, round);
    }

    /// @dev Revocation at the threshold of rejections.
    function _revokeAt(address addr, uint32 index, uint32 count, uint32 round) private {
        Node storage node = _nodes[addr];
        uint32 threshold = maxRejections;
        if (threshold != 0 && count >= threshold && node.active) {
            node.active = false;
            _activeWords[index >> 8] &= ~(uint256(1) << (index & 255));
            activeCount -= 1;
            emit NodeRevoked(addr, round, count);
        }
    }

    function _recover(bytes32 structHash, bytes calldata signature) private view returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        // EIP-2: only the lower half of s, so a signature has one valid form
        if (uint256(s) > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) {
            return address(0);
        }
        return ecrecover(digest, v, r, s);
    }

    function _activeNode(address addr) private view returns (Node storage node) {
        node = _nodes[addr];
        if (!node.active) {
            if (!node.registered) revert UnknownNode(addr);
            revert NodeIsRevoked(addr);
        }
    }
}
