"""bflsim reproduce: the plan and its time first, steps in order, resumable, failures stop it."""

import pytest

from bflsim.config import ConfigError
from bflsim.reproduce import plan_lines, read_recipe, reproduce


def recipe(tmp_path, body):
    path = tmp_path / "reproduce.toml"
    path.write_text(body)
    return path


def test_the_projects_recipe_covers_the_results_folders_it_names():
    steps = read_recipe()
    assert [s.name for s in steps] == ["centralized", "table4", "table4_chain", "table4_strong", "sweep", "zoo",
                                       "quarantine", "bench"]
    reports = {c[c.index("--out") + 1] for s in steps for c in s.commands if c[0] in ("report", "bench")}
    assert reports == {"results/centralized", "results/table4", "results/table4_chain", "results/table4_strong", "results/sweep",
                       "results/zoo", "results/quarantine", "results/bench"}


def test_steps_run_in_order_a_failure_stops_and_a_rerun_skips_what_is_done(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    steps = read_recipe(recipe(tmp_path, f"""
[[step]]
name = "first"
what = "redraw an empty folder"
minutes = 2
commands = ["figures {tmp_path / 'empty'}"]

[[step]]
name = "second"
minutes = 90
commands = ["report {tmp_path / 'missing'} --out {tmp_path / 'out'}"]
"""))
    work = tmp_path / "work"

    assert reproduce(steps, work=work) == 2  # report of a missing folder: bad input
    out = capsys.readouterr().out
    assert "  first          ~2 min" in out and "  second         ~1.5 h" in out and "~1.5 h on 2 cores" in out
    assert (work / "first.done").read_text().startswith("finished ")
    assert not (work / "second.done").exists()
    assert "first          done, skipped" in "\n".join(plan_lines(steps, work=work))
    assert reproduce(steps, work=work, dry_run=True) == 0
    assert "~1.5 h on 2 cores" in capsys.readouterr().out  # only the step left counts


@pytest.mark.parametrize(("body", "message"), [
    ('[[step]]\nname = "x"\ncommands = ["rm -rf /"]', "'rm -rf /' is not a bflsim command"),
    ('[[step]]\nname = "x"\ncommands = []', "needs a name and a non-empty list of commands"),
    ('[[step]]\nname = "x"\nminutes = 1\ncommand = ["run a"]', "unknown key 'command'"),
    ("", "no [[step]]"),
])
def test_a_bad_recipe_is_refused_naming_the_step(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_recipe(recipe(tmp_path, body))


def test_an_unknown_only_step_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="--only 'nope': no such step"):
        reproduce(read_recipe(), only={"nope"}, work=tmp_path)
