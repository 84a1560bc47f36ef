"""Every key of the messages and records between hubs and workers, in one place.

Plain string constants, grouped by who sets the key and who reads it; every
module of the package uses them instead of literals (``tests/test_keys.py``
fails on a literal outside :mod:`flwr_multilevel.protocol`). Keys that are
Flower's own (its simulation's node config, what its strategies put in a
train config, the metric its strategies weight by) are named here too, so that
the reader sees the whole vocabulary of a round.

Examples
--------
>>> from flwr.app import ConfigRecord
>>> sorted(ConfigRecord({TIME_STEPS: 4, SEED: 0}).keys())
['seed', 'time-steps']
"""

# ---- node config: set where a node is started, read by the worker (and discovery) ----------

PARTITION_ID = "partition-id"  # Flower's simulation: the node's partition, i.e. worker i
NUM_PARTITIONS = "num-partitions"  # Flower's simulation: how many partitions (N)
WORKER_ID = "worker-id"  # deploy: the worker index i (preferred over partition-id)
HUB_ID = "hub-id"  # deploy: the hub d of the node's worker

# ---- train config, per worker: set by each hub (HubStrategy) for the worker it sends to ------
# WORKER_ID (as above: worker i) and HUB_ID (hub d) go in the train config too.

OPERATING_RATE = "operating-rate"  # p_i, the chance of a step at each time step
PER_WORKER = (WORKER_ID, HUB_ID, OPERATING_RATE)  # a caller's train config must not set them

# ---- train config, every worker: set by MLLSGD (and Flower's strategies) --------------------

TIME_STEPS = "time-steps"  # tau, the time steps of one round (MLLSGD)
SEED = "seed"  # the seed of every draw: coins and mini-batches by (seed, round, worker) (MLLSGD)
SERVER_ROUND = "server-round"  # the round, 1-based (Flower's strategies add it)
PROXIMAL_MU = "proximal-mu"  # FedProx's mu (Flower's FedProx adds it)
ROUND_KEYS = (TIME_STEPS, SEED, SERVER_ROUND, OPERATING_RATE, WORKER_ID)  # a hub's round

# ---- train config, every worker: set by the app's ServerApp for its own ClientApp ------------

LR = "lr"  # SGD step size eta (make_worker_train)
BATCH_SIZE = "batch-size"  # mini-batch size of one step (make_worker_train)
TORCH_THREADS = "torch-threads"  # torch threads of the worker; 0: leave as is
DATASET = "dataset"  # data set name (data.name)
DATA_ROOT = "data-root"  # torchvision folder of the data set (data.root)
PARTITION = "partition"  # how the training set is split (data.partition)
PARTITION_ALPHA = "partition-alpha"  # dirichlet concentration (data.alpha)
PARTITION_SHARDS = "partition-shards"  # shards per worker (data.shards_per_worker)
NUM_WORKERS = "num-workers"  # N, the workers the training set is split over
MODEL = "model"  # model name (model.name)
DEVICE = "device"  # cpu | cuda | auto (simulation.device)

# ---- train reply, MetricRecord: set by the worker, read by its hub ---------------------------

NUM_EXAMPLES = "num-examples"  # local examples n_i; also Flower's default weighted_by_key
STEPS = "steps"  # SGD steps taken this round, in [0, tau] (multilevel_mod adds it)
TRAIN_LOSS = "train-loss"  # mean mini-batch loss of the round (make_worker_train)
REPLY_METRICS = (NUM_EXAMPLES, STEPS)  # every valid train reply holds them

# ---- what a hub hands its strategy chain: set by HubStrategy --------------------------------

WORKER_WEIGHT = "worker-weight"  # w_i, the key the chain's aggregator weights by (v_i)

# ---- record names: Flower's defaults (arrayrecord_key, configrecord_key) and the reply's -----

ARRAYS = "arrays"  # the model
CONFIG = "config"  # the train config
METRICS = "metrics"  # the reply's MetricRecord

# ---- discovery: which node is which worker (strategies.discovery <-> clients.mod) ------------

DISCOVERY = "mll-discovery"  # hub -> node: a ConfigRecord of this name asks for the worker id
ASK = "ask"  # its one entry, whose value is WORKER_ID
WORKER = "worker"  # node -> hub: the reply's MetricRecord, holding WORKER_ID

# ---- round metrics: set by MLLSGD in Result.train_metrics_clientapp[round] ------------------
# STEPS (all workers), then the hubs' metrics combined with b_d, each hub's as hub<d>-<key>.

MISSING = "missing"  # workers counted as taking no step
DROPPED = "dropped"  # replies not used
SLOTS = "slots"  # time slots the round took on the virtual clock
BYTES_DOWN = "bytes-down"  # model bytes hub -> workers
BYTES_UP = "bytes-up"  # model bytes workers -> hub
BYTES_HUBS = "bytes-hubs"  # model bytes hub <-> hub (gossip)
CONSENSUS = "consensus"  # sum_d b_d ||y_d - u||^2 after the round
WORKER_STEPS = "worker-steps"  # steps of each worker, by worker id (0: no valid reply)


def hub_key(hub_id: int, key: str) -> str:
    """Return the key of hub ``hub_id``'s own ``key`` among a round's metrics.

    Examples
    --------
    >>> hub_key(2, TRAIN_LOSS)
    'hub2-train-loss'
    """
    return f"hub{hub_id}-{key}"
