// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title FederatedRegistry: an audit trail for federated learning rounds.
/// @notice The owner registers edge nodes (address + index 0..254) and names the aggregator.
/// Nodes register digests of their data batches and of every model update they send;
/// the aggregator opens each round with the global model's digest and a cohort, and
/// commits it with the new global digest, the accepted nodes and a digest of the scores.
/// A cohort member that submitted but was not accepted gets a rejection; at
/// `maxRejections` rejections the contract revokes the node (0 disables revocation).
/// @dev Sets of nodes are uint256 bitmaps over node indices (bit i = node i). Update digests
/// live only in events: a round keeps one `pending` word instead, seeded at openRound with
/// the cohort plus the OPEN bit (bit 255), from which each submission clears its own bit.
/// Every submitUpdate therefore writes a slot that is already non-zero (2,900 gas rather
/// than 22,100) and "once per round" is one bit test.
contract FederatedRegistry {
    uint256 private constant OPEN = 1 << 255;
    uint256 public constant MAX_NODES = 255;

    struct Node {
        uint8 index;
        bool registered;
        bool active;
        uint32 rejections;
        uint64 dataTimestamp;
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
    address public aggregator;
    uint32 public maxRejections;
    uint256 public registeredNodes; // bitmap
    uint256 public activeNodes; // bitmap: registered and not revoked

    mapping(address => Node) private _nodes;
    mapping(address => bytes32) private _dataDigest;
    mapping(uint256 => address) public nodeAt;
    mapping(uint32 => Round) private _rounds;

    event NodeRegistered(address indexed node, uint8 index);
    event AggregatorSet(address indexed aggregator);
    event DataRegistered(address indexed node, bytes32 digest, uint64 timestamp);
    event RoundOpened(uint32 indexed round, bytes32 globalDigest, uint256 cohort);
    event UpdateSubmitted(
        uint32 indexed round, address indexed node, bytes32 updateDigest, uint32 numSamples
    );
    event RoundCommitted(
        uint32 indexed round, bytes32 newGlobalDigest, uint256 accepted, bytes32 scoresDigest
    );
    event NodeRejected(uint32 indexed round, address indexed node, uint32 rejections);
    event NodeRevoked(address indexed node, uint32 round, uint32 rejections);

    error NotOwner(address caller);
    error NotAggregator(address caller);
    error ZeroAddress();
    error LengthMismatch(uint256 nodes, uint256 indices);
    error IndexOutOfRange(uint256 index);
    error IndexTaken(uint8 index);
    error AlreadyRegistered(address node);
    error UnknownNode(address node);
    error NodeIsRevoked(address node);
    error EmptyCohort(uint32 round);
    error UnregisteredInCohort(uint32 round, uint256 nodes);
    error RoundAlreadyOpened(uint32 round);
    error RoundNotOpen(uint32 round);
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

    constructor(uint32 maxRejections_) {
        owner = msg.sender;
        aggregator = msg.sender;
        maxRejections = maxRejections_;
        emit AggregatorSet(msg.sender);
    }

    // ---- owner ----------------------------------------------------------------------

    function setAggregator(address aggregator_) external onlyOwner {
        if (aggregator_ == address(0)) revert ZeroAddress();
        aggregator = aggregator_;
        emit AggregatorSet(aggregator_);
    }

    function registerNodes(address[] calldata nodes, uint8[] calldata indices)
        external
        onlyOwner
    {
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
                index: index, registered: true, active: true, rejections: 0, dataTimestamp: 0
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

    /// @param digest sha256(X || timestamp || node index) of the node's data batch.
    function registerData(bytes32 digest, uint64 timestamp) external {
        Node storage node = _activeNode(msg.sender);
        node.dataTimestamp = timestamp;
        _dataDigest[msg.sender] = digest;
        emit DataRegistered(msg.sender, digest, timestamp);
    }

    function submitUpdate(uint32 round, bytes32 updateDigest, uint32 numSamples) external {
        uint256 bit = 1 << _activeNode(msg.sender).index;
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

    function openRound(uint32 round, bytes32 globalDigest, uint256 cohort)
        external
        onlyAggregator
    {
        Round storage r = _rounds[round];
        if (r.cohort != 0) revert RoundAlreadyOpened(round);
        if (cohort == 0) revert EmptyCohort(round);
        uint256 unregistered = cohort & ~registeredNodes;
        if (unregistered != 0) revert UnregisteredInCohort(round, unregistered);
        r.cohort = cohort;
        r.pending = cohort | OPEN;
        r.globalDigest = globalDigest;
        emit RoundOpened(round, globalDigest, cohort);
    }

    /// @param accepted bitmap of the nodes whose updates entered the aggregate; it must be a
    /// subset of those that submitted. Submitters left out each get one rejection.
    function commitRound(
        uint32 round,
        bytes32 newGlobalDigest,
        uint256 accepted,
        bytes32 scoresDigest
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
        emit RoundCommitted(round, newGlobalDigest, accepted, scoresDigest);

        uint256 rejected = submitted & ~accepted;
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
            uint64 dataTimestamp
        )
    {
        Node storage n = _nodes[node];
        return (n.registered, n.active, n.index, n.rejections, _dataDigest[node], n.dataTimestamp);
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
