// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title FederatedRegistry: an audit trail for federated learning rounds (registry v2).
/// @notice One registry per run. The deployer (owner) records the run's digest (its resolved
/// configuration, code commit, data and test-split digests and a random nonce), registers the
/// edge nodes (address + index 0..254) before the first round, and names the aggregator, a
/// separate key. Nodes register the digest and size of their data, and the digest of every
/// model update they send, bound to the run's digest and to their registered sample count, so
/// a signed update from another run or with another weight reverts. The aggregator opens the
/// rounds in sequence, each from the global model the previous round committed, with a cohort
/// of active nodes, and commits each with the new global digest, the accepted nodes, a digest
/// of the scores and a digest of the new model's evaluation on the run's test split.
/// A cohort member that submitted but was not accepted gets a rejection; at `maxRejections`
/// rejections the contract revokes the node (0 disables revocation).
/// @dev Sets of nodes are uint256 bitmaps over node indices (bit i = node i). Update and
/// evaluation digests live only in events: a round keeps one `pending` word instead, seeded at
/// openRound with the cohort plus the OPEN bit (bit 255), from which each submission clears its
/// own bit. Every submitUpdate therefore writes a slot that is already non-zero (2,900 gas
/// rather than 22,100) and "once per round" is one bit test; the node's index, status and
/// registered sample count share one slot, so its checks cost one cold read.
contract FederatedRegistry {
    uint256 private constant OPEN = 1 << 255;
    uint256 public constant MAX_NODES = 255;

    struct Node {
        uint8 index;
        bool registered;
        bool active;
        uint32 rejections;
        uint64 dataTimestamp;
        uint32 numSamples; // the size of the node's registered data batch
    }

    struct Round {
        uint256 cohort;
        uint256 pending; // OPEN | members that have not submitted yet; OPEN cleared at commit
        uint256 accepted;
        bytes32 globalDigest;
        bytes32 newGlobalDigest;
        bytes32 scoresDigest;
    }

    // No immutables: the deployed code is then the same for every deployment, so a client can
    // recognise the contract by the hash of its code.
    address public owner;
    address public pendingOwner;
    address public aggregator; // shares its slot with maxRejections and lastRound
    uint32 public maxRejections;
    uint32 public lastRound; // the last round opened (0: none yet)
    bytes32 public runDigest;
    uint256 public registeredNodes; // bitmap
    uint256 public activeNodes; // bitmap: registered and not revoked

    mapping(address => Node) private _nodes;
    mapping(address => bytes32) private _dataDigest;
    mapping(uint256 => address) public nodeAt;
    mapping(uint32 => Round) private _rounds;

    event RunConfigured(bytes32 runDigest, uint32 maxRejections);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event NodeRegistered(address indexed node, uint8 index);
    event AggregatorSet(address indexed aggregator);
    event DataRegistered(address indexed node, bytes32 digest, uint64 timestamp, uint32 numSamples);
    event RoundOpened(uint32 indexed round, bytes32 globalDigest, uint256 cohort);
    event UpdateSubmitted(
        uint32 indexed round, address indexed node, bytes32 updateDigest, uint32 numSamples
    );
    event RoundCommitted(
        uint32 indexed round,
        bytes32 newGlobalDigest,
        uint256 accepted,
        bytes32 scoresDigest,
        bytes32 evaluationDigest
    );
    event NodeRejected(uint32 indexed round, address indexed node, uint32 rejections);
    event NodeRevoked(address indexed node, uint32 round, uint32 rejections);

    error NotOwner(address caller);
    error NotPendingOwner(address caller);
    error NotAggregator(address caller);
    error ZeroAddress();
    error LengthMismatch(uint256 nodes, uint256 indices);
    error IndexOutOfRange(uint256 index);
    error IndexTaken(uint8 index);
    error AlreadyRegistered(address node);
    error RegistrationClosed(uint32 lastRound);
    error UnknownNode(address node);
    error NodeIsRevoked(address node);
    error ZeroSamples(address node);
    error EmptyCohort(uint32 round);
    error InactiveInCohort(uint32 round, uint256 nodes);
    error RoundOutOfOrder(uint32 round, uint32 expected);
    error PreviousRoundOpen(uint32 round);
    error GlobalDigestMismatch(uint32 round, bytes32 expected, bytes32 given);
    error RoundNotOpen(uint32 round);
    error WrongRun(bytes32 runDigest);
    error SampleCountMismatch(address node, uint32 claimed, uint32 registered);
    error NotInCohort(uint32 round, address node);
    error AlreadySubmitted(uint32 round, address node);
    error AcceptedWithoutSubmission(uint32 round, uint256 nodes);

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

    /// @notice The federation is fixed before round 1: no node can be added once it opened.
    function registerNodes(address[] calldata nodes, uint8[] calldata indices)
        external
        onlyOwner
    {
        if (lastRound != 0) revert RegistrationClosed(lastRound);
        if (nodes.length != indices.length) revert LengthMismatch(nodes.length, indices.length);
        uint256 registered = registeredNodes;
        uint256 active = activeNodes;
        for (uint256 k = 0; k < nodes.length; ++k) {
            address node = nodes[k];
            uint8 index = indices[k];
            if (node == address(0)) revert ZeroAddress();
            if (index >= MAX_NODES) revert IndexOutOfRange(index);
            if (registered & (1 << index) != 0) revert IndexTaken(index);
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
            registered |= 1 << index;
            active |= 1 << index;
            emit NodeRegistered(node, index);
        }
        registeredNodes = registered;
        activeNodes = active;
    }

    // ---- edge nodes -----------------------------------------------------------------

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
        uint256 bit = 1 << node.index;
        Round storage r = _rounds[round];
        uint256 pending = r.pending;
        if (pending & OPEN == 0) revert RoundNotOpen(round);
        if (pending & bit == 0) {
            if (r.cohort & bit == 0) revert NotInCohort(round, msg.sender);
            revert AlreadySubmitted(round, msg.sender);
        }
        r.pending = pending & ~bit;
        emit UpdateSubmitted(round, msg.sender, updateDigest, numSamples);
    }

    // ---- aggregator -----------------------------------------------------------------

    /// @notice Rounds open in sequence (1, 2, ...), each once the previous one is committed
    /// and, after round 1, from the global model it committed.
    function openRound(uint32 round, bytes32 globalDigest, uint256 cohort)
        external
        onlyAggregator
    {
        uint32 previous = lastRound;
        if (round != previous + 1) revert RoundOutOfOrder(round, previous + 1);
        if (previous != 0) {
            Round storage last = _rounds[previous];
            if (last.pending & OPEN != 0) revert PreviousRoundOpen(previous);
            bytes32 expected = last.newGlobalDigest;
            if (globalDigest != expected) revert GlobalDigestMismatch(round, expected, globalDigest);
        }
        if (cohort == 0) revert EmptyCohort(round);
        uint256 inactive = cohort & ~activeNodes;
        if (inactive != 0) revert InactiveInCohort(round, inactive);
        lastRound = round;
        Round storage r = _rounds[round];
        r.cohort = cohort;
        r.pending = cohort | OPEN;
        r.globalDigest = globalDigest;
        emit RoundOpened(round, globalDigest, cohort);
    }

    /// @param accepted bitmap of the nodes whose updates entered the aggregate; it must be a
    /// subset of those that submitted. Submitters left out each get one rejection.
    /// @param evaluationDigest bflsim.hashing.evaluation_digest of the new global model's
    /// confusion matrix on the run's test split (kept in the event only).
    function commitRound(
        uint32 round,
        bytes32 newGlobalDigest,
        uint256 accepted,
        bytes32 scoresDigest,
        bytes32 evaluationDigest
    ) external onlyAggregator {
        Round storage r = _rounds[round];
        uint256 pending = r.pending;
        if (pending & OPEN == 0) revert RoundNotOpen(round);
        uint256 submitted = r.cohort & ~pending;
        uint256 stray = accepted & ~submitted;
        if (stray != 0) revert AcceptedWithoutSubmission(round, stray);
        r.pending = pending & ~OPEN;
        r.accepted = accepted;
        r.newGlobalDigest = newGlobalDigest;
        r.scoresDigest = scoresDigest;
        emit RoundCommitted(round, newGlobalDigest, accepted, scoresDigest, evaluationDigest);

        _reject(round, submitted & ~accepted);
    }

    /// @dev One rejection for each node of `rejected`; revocation at the threshold.
    function _reject(uint32 round, uint256 rejected) private {
        uint32 threshold = maxRejections;
        for (uint256 i = 0; rejected != 0; ++i) {
            if (rejected & (1 << i) == 0) continue;
            rejected &= ~(1 << i);
            address addr = nodeAt[i];
            Node storage node = _nodes[addr];
            uint32 count = node.rejections + 1;
            node.rejections = count;
            emit NodeRejected(round, addr, count);
            if (threshold != 0 && count >= threshold && node.active) {
                node.active = false;
                activeNodes &= ~(1 << i);
                emit NodeRevoked(addr, round, count);
            }
        }
    }

    // ---- views ----------------------------------------------------------------------

    function nodeInfo(address node)
        external
        view
        returns (
            bool registered,
            bool active,
            uint8 index,
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

    /// @return status 0 = never opened, 1 = open, 2 = committed.
    function roundInfo(uint32 round)
        external
        view
        returns (
            uint8 status,
            uint256 cohort,
            uint256 submitted,
            uint256 accepted,
            bytes32 globalDigest,
            bytes32 newGlobalDigest,
            bytes32 scoresDigest
        )
    {
        Round storage r = _rounds[round];
        if (r.cohort == 0) status = 0;
        else if (r.pending & OPEN != 0) status = 1;
        else status = 2;
        return (
            status,
            r.cohort,
            r.cohort & ~r.pending,
            r.accepted,
            r.globalDigest,
            r.newGlobalDigest,
            r.scoresDigest
        );
    }

    // ---- internal -------------------------------------------------------------------

    function _activeNode(address addr) private view returns (Node storage node) {
        node = _nodes[addr];
        if (!node.active) {
            if (!node.registered) revert UnknownNode(addr);
            revert NodeIsRevoked(addr);
        }
    }
}
