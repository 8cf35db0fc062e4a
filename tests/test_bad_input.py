"""Bad input is refused before Ray, the chain or a run folder starts: exit code 2, one sentence
naming the key, file or value and what was expected, no traceback (issue 9, section 4)."""

import json
import socket
import tomllib
from pathlib import Path

import numpy as np
import pytest

from bflsim.cli import main
from bflsim.config import ConfigError, parse_experiment, read_toml
from bflsim.data import DataError, check_enough_rows, check_node_rows, partition, run_data_dir
from bflsim.ledger.base import LedgerError
from bflsim.ledger.factory import check_ledger
from bflsim.ledger.web3_ledger import _is_insufficient_funds, check_rpc_endpoint, operator_gas_need

BASE = """
[experiment]
name = "bad"
kind = "federated"

[data]
dataset = "synthetic"
synthetic = { num_samples = 600 }

[models]
names = ["dnn"]
dnn = { hidden_units = [8] }

[train]
epochs = 1
batch_size = 32

[federation]
num_nodes = 6
rounds = 1

[ledger]
backend = "none"
"""


def run_cli(tmp_path, capsys, *args, text=BASE, sets=()):
    """``bflsim run`` on an experiment file; returns (exit code, stderr, run folders made)."""
    experiment = tmp_path / "exp" / "bad.toml"
    experiment.parent.mkdir(exist_ok=True)
    experiment.write_text(text, encoding="utf-8")
    out = tmp_path / "runs"
    code = main(["run", str(experiment), "--out", str(out), "--quiet",
                 *[f"--set={s}" for s in sets], *args])
    err = capsys.readouterr().err
    return code, err, sorted(out.rglob("manifest.json")) if out.exists() else []


def refused(tmp_path, capsys, *fragments, sets=(), text=BASE, args=()):
    code, err, folders = run_cli(tmp_path, capsys, *args, text=text, sets=sets)
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("bflsim: error: ")
    for fragment in fragments:
        assert fragment in err, err
    assert folders == []  # refused before any run folder exists
    return err


# --- refused when the config is parsed ----------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["train.learning_rate=inf"], "train.learning_rate must be a finite number; got inf"),
        (["train.learning_rate=nan"], "train.learning_rate must be a finite number; got nan"),
        (["federation.client_timeout=inf"], "federation.client_timeout must be a finite number; got inf"),
        (["aggregator.reject_factor=inf"], "aggregator.reject_factor must be a finite number; got inf"),
        (["federation.seed=-1"], "federation.seed must be an integer in 0..4294967295 (2**32 - 1); got -1"),
        (["train.seed=-1"], "train.seed must be an integer in 0..4294967295"),
        (["data.seed=-3"], "data.seed must be an integer in 0..4294967295 (2**32 - 1); got -3"),
        (["attack.seed=-1"], "attack.seed must be an integer in 0..4294967295"),
        (["train.seed=4294967296"], "train.seed must be an integer in 0..4294967295"),
        (["ledger.backend='embedded'", "ledger.key_seed=-1"], "ledger.key_seed must be an integer in 0..2**64 - 1; got -1"),
        (["ledger.backend='embedded'", "ledger.chain_id=1"],
         "ledger.chain_id = 1 cannot apply to ledger.backend = 'embedded': the embedded py-evm chain sets its own"),
        (["ledger.chain_id=1"], "ledger.chain_id = 1 cannot apply to ledger.backend = 'none'"),
        (["aggregator.name='trimmed_mean'", "aggregator.params.trim_fraction=0.1"],
         ("trim_fraction (beta) = 0.1 trims int(0.1 * 6) = 0 rows at each end with n=6 clients, so the trimmed "
         "mean is the plain mean; the smallest trim_fraction that trims one row at n=6 is 0.167")),
        (["federation.min_node_rows=-1"], "federation.min_node_rows must be >= 0"),
    ],
)
def test_impossible_settings_are_refused_at_parse_time(tmp_path, capsys, sets, fragment):
    refused(tmp_path, capsys, fragment, sets=sets)


def test_the_smallest_beta_named_does_trim_one_row():
    config = parse_experiment({"experiment": {"kind": "federated"}, "federation": {"num_nodes": 6},
                               "aggregator": {"name": "trimmed_mean", "params": {"trim_fraction": 0.167}}})

    assert int(config.rule.trim_fraction * 6) == 1


def test_the_trim_check_is_made_on_the_cohort_not_on_a_round_with_failures():
    config = parse_experiment({"experiment": {"kind": "federated"}, "federation": {"num_nodes": 10},
                               "aggregator": {"name": "trimmed_mean", "params": {"trim_fraction": 0.1}}})

    config.rule.check(9)  # a round where one node failed still aggregates (trims 0 there)
    with pytest.raises(Exception, match="trims int"):
        config.rule.check_cohort(9)


# --- refused once the data is loaded, before Ray -------------------------------------------


def test_more_nodes_than_training_rows_is_refused_naming_both(tmp_path, capsys):
    refused(tmp_path, capsys, "federation.num_nodes = 60 but the training split has only 56 rows",
            "Use at most 56 nodes", sets=["data.synthetic.num_samples=80", "federation.num_nodes=60",
                                          "federation.min_node_rows=0"])


def test_nodes_times_the_minimum_beyond_the_rows_is_refused(tmp_path, capsys):
    refused(tmp_path, capsys, "federation.num_nodes = 6 but the training split has only 56 rows",
            "federation.min_node_rows = 10 asks for 10 rows per node, 60 in all", "Use at most 5 nodes",
            sets=["data.synthetic.num_samples=80"])


def test_a_dirichlet_partition_with_tiny_nodes_is_refused_with_the_sizes(tmp_path, capsys):
    err = refused(tmp_path, capsys, "federation.partition = 'dirichlet' (federation.alpha = 0.001)",
                  "with fewer than federation.min_node_rows = 10 training rows", "node sizes: min ",
                  "raise federation.alpha", "0 turns the check off",
                  sets=["federation.partition='dirichlet'", "federation.alpha=0.001"])
    assert "node " in err.split("training rows (")[1]


def test_check_node_rows_names_the_smallest_nodes_and_passes_a_fair_split():
    config = parse_experiment({"federation": {"num_nodes": 4, "partition": "dirichlet", "alpha": 0.5}})
    parts = [np.arange(0, 3), np.arange(3, 50), np.arange(50, 51), np.arange(51, 100)]

    with pytest.raises(DataError) as caught:
        check_node_rows(config.federation, parts)
    check_node_rows(config.federation, partition(np.arange(100) % 3, 4, "iid", seed=0))

    message = str(caught.value)
    assert "leaves 2 of 4 nodes" in message and "(node 2: 1, node 0: 3)" in message
    assert "min 1, median 25, max 49" in message


def test_check_enough_rows_accepts_exactly_enough():
    config = parse_experiment({"federation": {"num_nodes": 5, "min_node_rows": 10}})

    check_enough_rows(config.federation, 50)
    with pytest.raises(DataError, match="Use at most 4 nodes"):
        check_enough_rows(config.federation, 49)


# --- data files ---------------------------------------------------------------------------


def csv_experiment(path, extra=""):
    return BASE.replace('dataset = "synthetic"\nsynthetic = { num_samples = 600 }',
                        f'dataset = "csv"\npath = "{path}"\nlabel_column = "kind"\n{extra}')


def write_csv(path, bad_row=None):
    rows = ["a,b,kind"] + [f"{i},{'inf' if i == bad_row else i % 7},{('x', 'y')[i % 2]}" for i in range(300)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_inf_in_a_csv_is_refused_unless_imputed_and_then_recorded(tmp_path, capsys):
    path = write_csv(tmp_path / "flows.csv", bad_row=7)

    refused(tmp_path, capsys, f"{path}: column 'b' holds 1 missing, NaN or infinite values (first at line 9)",
            "data.impute = 'median'", text=csv_experiment(path))
    code, err, folders = run_cli(tmp_path, capsys, text=csv_experiment(path), sets=["data.impute='median'"])

    assert code == 0, err
    manifest = json.loads(folders[0].read_text())
    assert manifest["data"]["imputed"]["values"] == 1
    assert manifest["config"]["data"]["impute"] == "median"


def test_data_dir_of_an_experiment_file_is_honoured_relative_to_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BFLSIM_DATA_DIR", str(tmp_path / "elsewhere"))
    text = BASE.replace('dataset = "synthetic"\nsynthetic = { num_samples = 600 }',
                        'dataset = "nsl-kdd"\ndata_dir = "my-data"')

    err = refused(tmp_path, capsys, text=text)

    looked = tmp_path / "exp" / "my-data" / "nsl-kdd" / "KDDTrain+.txt"
    assert f"missing data file {looked}" in err  # the file's data_dir, not $BFLSIM_DATA_DIR
    assert "--data-dir if given, else data.data_dir of the experiment (relative to its file), " \
           "else $BFLSIM_DATA_DIR, else ./data" in err
    assert f"($BFLSIM_DATA_DIR is '{tmp_path / 'elsewhere'}')" in err


def test_data_dir_on_the_command_line_wins_over_the_file(tmp_path, capsys):
    text = BASE.replace('dataset = "synthetic"\nsynthetic = { num_samples = 600 }',
                        'dataset = "nsl-kdd"\ndata_dir = "my-data"')

    err = refused(tmp_path, capsys, text=text, args=("--data-dir", str(tmp_path / "cli-data")))

    assert f"missing data file {tmp_path / 'cli-data' / 'nsl-kdd' / 'KDDTrain+.txt'}" in err


def test_run_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("BFLSIM_DATA_DIR", str(tmp_path / "env"))
    config = parse_experiment({"data": {"dataset": "nsl-kdd", "data_dir": str(tmp_path / "file")}})
    plain = parse_experiment({"data": {"dataset": "nsl-kdd"}})

    assert run_data_dir(config.data, tmp_path / "cli") == tmp_path / "cli"
    assert run_data_dir(config.data) == tmp_path / "file"
    assert run_data_dir(plain.data) == tmp_path / "env"
    assert run_data_dir(parse_experiment({}).data) is None  # synthetic data is generated


def test_read_toml_resolves_data_dir_in_data_scenarios_and_sweeps(tmp_path):
    path = tmp_path / "sub" / "e.toml"
    path.parent.mkdir()
    path.write_text('[data]\ndata_dir = "d"\n[[scenarios]]\nname = "s"\nset = { "data.data_dir" = "../e" }\n'
                    '[sweep]\ngrid = { "data.data_dir" = ["/abs", "g"] }\n', encoding="utf-8")

    raw = read_toml(path)

    assert raw["data"]["data_dir"] == str(path.parent / "d")
    assert raw["scenarios"][0]["set"]["data.data_dir"] == str(path.parent / "../e")
    assert raw["sweep"]["grid"]["data.data_dir"] == ["/abs", str(path.parent / "g")]
    assert tomllib.loads(path.read_text())["data"]["data_dir"] == "d"  # the file itself is untouched


@pytest.mark.parametrize("extra", ["header = false", 'columns = ["a", "b", "kind"]'])
def test_header_and_columns_come_together(tmp_path, capsys, extra):
    path = write_csv(tmp_path / "flows.csv")

    refused(tmp_path, capsys, "data.header = false" if "columns" not in extra else "set data.header = false",
            text=csv_experiment(path, extra))


def test_header_and_columns_are_refused_for_a_registered_dataset():
    config = parse_experiment({"data": {"dataset": "nsl-kdd", "header": False, "columns": ["a"]}})

    with pytest.raises(ConfigError, match="data.header and data.columns apply to data.dataset = 'csv'"):
        from bflsim.plans import check_config

        check_config(config)


# --- bflsim data --------------------------------------------------------------------------


def test_bflsim_data_exits_1_on_a_missing_or_corrupt_file(tmp_path, capsys):
    corrupt = tmp_path / "nsl-kdd" / "KDDTrain+.txt.gz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")

    missing = main(["data", "nsl-kdd", "--data-dir", str(tmp_path / "empty")])
    broken = main(["data", "nsl-kdd", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out

    assert (missing, broken) == (1, 1)
    assert "MISSING" in out and "UNREADABLE" in out and "nsl-kdd: incomplete" in out


def test_bflsim_data_exits_0_when_every_file_verifies(capsys):
    data_dir = Path(__import__("os").environ.get("BFLSIM_DATA_DIR", "data"))
    if not (data_dir / "nsl-kdd").is_dir():
        pytest.skip("no NSL-KDD in $BFLSIM_DATA_DIR")

    assert main(["data", "nsl-kdd", "--data-dir", str(data_dir)]) == 0
    assert "all files present and verified" in capsys.readouterr().out


# --- the RPC endpoint, checked before Ray ---------------------------------------------------


def free_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_an_unreachable_rpc_endpoint_is_refused_before_ray(tmp_path, capsys):
    url = free_url()

    refused(tmp_path, capsys, f"ledger.backend = 'rpc', ledger.rpc_url = '{url}'", "refused before the run starts",
            f"cannot reach the JSON-RPC endpoint {url}",
            sets=["ledger.backend='rpc'", f"ledger.rpc_url='{url}'"])


@pytest.mark.parametrize(
    "message",
    [
        "insufficient funds for gas * price + value: address 0xab have 0 want 21000",  # geth, erigon, anvil
        "insufficient funds for transfer",  # geth
        "insufficient balance for transfer",  # geth (older), erigon
        "InsufficientFunds, Account balance: 3020000000000000000, cumulative cost: 5809177184380485770",  # nethermind
        "insufficient sender balance",  # nethermind eth_estimateGas
        "insufficient MaxFeePerGas for sender balance",  # nethermind
        "Upfront cost exceeds account balance",  # besu JSON-RPC error
        "transaction up-front cost 0x5208 exceeds transaction sender account balance 0x0",  # besu validator
        ("sender doesn't have enough funds to send tx. The max upfront cost is: 4347 and the sender's account "
        "only has: 4212"),  # hardhat
        "VM Exception while processing transaction: sender doesn't have enough funds to send tx.",  # ganache
        "Insufficient funds. The account you tried to send transaction from does not have enough funds.",  # openethereum
        "not enough funds for gas",  # arbitrum
        "Sender does not have enough balance to cover transaction value and gas",  # py-evm
    ],
)
def test_every_common_nodes_wording_of_insufficient_funds_is_recognised(message):
    assert _is_insufficient_funds(message)
    assert _is_insufficient_funds(ValueError({"code": -32000, "message": message}))


@pytest.mark.parametrize("message", ["nonce too low", "execution reverted: NotInCohort(round=1)",
                                     "intrinsic gas too low", "already known", "transaction underpriced"])
def test_other_node_errors_are_not_read_as_insufficient_funds(message):
    assert not _is_insufficient_funds(message)


def test_the_gas_need_grows_with_nodes_and_rounds():
    assert operator_gas_need(10, 5) > operator_gas_need(10, 1) > operator_gas_need(2, 1) > 2_000_000


def test_rpc_pre_flight_on_anvil_passes_a_funded_operator_and_names_an_unfunded_one(anvil):
    nodes = ["0x" + f"{i:040x}" for i in range(1, 4)]

    facts = check_rpc_endpoint(anvil.url, chain_id=31337, private_key=None, node_addresses=nodes, rounds=3)
    with pytest.raises(Exception) as broke:
        check_rpc_endpoint(anvil.url, chain_id=None, private_key=b"\x42" * 32, node_addresses=nodes, rounds=3)

    assert facts["balance_wei"] >= facts["need_wei"] > 3 * 10**18 - 1  # funding the 3 nodes, plus gas
    message = str(broke.value)
    assert type(broke.value).__name__ == "InsufficientFunds"
    assert "holds 0 wei" in message and f"{operator_gas_need(3, 3)} gas" in message and "3 rounds" in message


def test_rpc_pre_flight_names_a_wrong_chain_and_an_unfunded_operator_as_config_errors(anvil, monkeypatch):
    raw = tomllib.loads(BASE)
    raw["ledger"] = {"backend": "rpc", "rpc_url": anvil.url, "chain_id": 1}
    wrong_chain = parse_experiment(raw)
    raw["ledger"] = {"backend": "rpc", "rpc_url": anvil.url, "operator_key_env": "BFLSIM_TEST_KEY"}
    unfunded = parse_experiment(raw)
    monkeypatch.setenv("BFLSIM_TEST_KEY", "0x" + "42" * 32)

    with pytest.raises(ConfigError, match=r"ledger.chain_id = 1: .*serves chain id 31337, not the expected 1"):
        check_ledger(wrong_chain)
    with pytest.raises(ConfigError, match=r"operator key from \$BFLSIM_TEST_KEY: .*holds 0 wei"):
        check_ledger(unfunded)
    assert check_ledger(parse_experiment({**raw, "ledger": {"backend": "rpc", "rpc_url": anvil.url}}))["chain_id"] == 31337


def test_a_plan_is_checked_point_by_point_before_its_first_run(tmp_path, capsys):
    text = BASE + ('\n[[scenarios]]\nname = "fine"\n\n[[scenarios]]\nname = "skewed"\n'
                   'set = { "federation.partition" = "dirichlet", "federation.alpha" = 0.001 }\n')

    refused(tmp_path, capsys, "point 'skewed' (skewed): federation.partition = 'dirichlet'", text=text)


def test_rpc_pre_flight_refuses_a_cohort_that_no_block_of_the_endpoint_holds(anvil):
    nodes = ["0x" + f"{i:040x}" for i in range(1, 4)]

    facts = check_rpc_endpoint(anvil.url, chain_id=31337, private_key=None, node_addresses=nodes, rounds=1,
                               cohort_size=1_000)
    with pytest.raises(LedgerError) as refused:
        check_rpc_endpoint(anvil.url, chain_id=31337, private_key=None, node_addresses=nodes, rounds=1,
                           cohort_size=3_000)

    assert facts["block_gas_limit"] == 30_000_000
    assert "a round of 3000 nodes needs up to 45,150,000 gas" in str(refused.value)
    assert "(30,000,000)" in str(refused.value) and "ledger.mode = 'batched'" in str(refused.value)
    batched = check_rpc_endpoint(anvil.url, chain_id=31337, private_key=None, node_addresses=nodes, rounds=1,
                                 cohort_size=3_000, mode="batched")  # constant gas per round, nodes unfunded
    assert batched["gas"] == operator_gas_need(3, 1, "batched") < operator_gas_need(3, 1)
