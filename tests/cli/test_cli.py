"""The medsynth-fl command line: every verb, and the errors a user can make."""

import json

import numpy as np
import pytest

from medsynth_fl.cli import build_parser, main

VERBS = ["keygen", "condense", "sample", "evaluate", "audit", "verify"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: medsynth-fl " + verb in capsys.readouterr().out


def test_verbs_are_exactly_these():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(VERBS)


@pytest.mark.parametrize("verb", [*VERBS, "dashboard", "report"])
def test_the_installed_command_adds_the_coordinator_verbs(verb, capsys):
    """``medsynth-fl`` is ``coordinator.cli:main``: the core verbs plus two."""
    from coordinator.cli import main as installed_main

    with pytest.raises(SystemExit) as exc:
        installed_main([verb, "--help"])
    assert exc.value.code == 0
    assert "usage: medsynth-fl " + verb in capsys.readouterr().out


@pytest.fixture(scope="module")
def condensed_run(tmp_path_factory):
    """One tiny condense through the CLI, shared by the tests below."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["keygen", "--out", str(root / "keys"), "--site-id", "site-a"]) == 0
    code = main(
        [
            "condense",
            "--config",
            "tiny",
            "--out",
            str(root / "run"),
            "--key",
            str(root / "keys" / "site-a.pem"),
            "--set",
            "package.site_id=site-a",
            "--set",
            f"data.cache_dir={root / 'cache'}",
        ]
    )
    assert code == 0
    return root


def test_sample_writes_npz_and_grids_and_verifies(condensed_run, capsys):
    root = condensed_run
    code = main(
        [
            "sample",
            str(root / "run" / "generator.msfl"),
            "--ipc",
            "3",
            "--out",
            str(root / "s"),
            "--public-key",
            str(root / "keys" / "site-a.pub"),
        ]
    )
    assert code == 0
    with np.load(root / "s" / "condensed.npz") as z:
        assert z["images"].shape[1:] == (16, 16, 3) and len(z["labels"]) == 3 * 8
    assert len(list((root / "s" / "grids").glob("*.png"))) == 8


def test_sample_with_rejection_of_near_copies(condensed_run, capsys):
    root = condensed_run
    code = main(
        [
            "sample",
            str(root / "run" / "generator.msfl"),
            "--ipc",
            "2",
            "--out",
            str(root / "r"),
            "--reject-copies-of",
            "embedded",
        ]
    )
    assert code == 0
    assert "near-copies" in capsys.readouterr().out


def test_evaluate_prints_the_three_metrics(condensed_run, capsys):
    root = condensed_run
    main(
        [
            "sample",
            str(root / "run" / "generator.msfl"),
            "--ipc",
            "3",
            "--out",
            str(root / "e"),
        ]
    )
    code = main(
        [
            "evaluate",
            "--config",
            "tiny",
            "--train",
            str(root / "e" / "condensed.npz"),
            "--test",
            "embedded",
            "--json",
            str(root / "e" / "m.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for label in ("macro one-vs-rest AUC", "accuracy", "balanced accuracy"):
        assert label in out
    assert set(json.loads((root / "e" / "m.json").read_text())["summary"]) == {
        "auc",
        "acc",
        "bal_acc",
    }


def test_audit_writes_report_and_roc(condensed_run, capsys):
    root = condensed_run
    code = main(
        [
            "audit",
            str(root / "run" / "generator.msfl"),
            "--config",
            "tiny",
            "--members",
            "embedded",
            "--nonmembers",
            "embedded",
            "--discriminator",
            str(root / "run" / "site_local" / "critic.safetensors"),
            "--out",
            str(root / "audit"),
        ]
    )
    assert code == 0
    report = json.loads((root / "audit" / "audit.json").read_text())
    assert "logan_wb" in report["attacks"] and "gate" in report
    assert "ci95" in report["attacks"]["logan_wb"]
    assert (root / "audit" / "roc.png").stat().st_size > 1000
    assert "TPR@1%FPR [95% CI]" in capsys.readouterr().out


def test_tampered_package_is_refused_with_exit_code_2(condensed_run, tmp_path, capsys):
    data = bytearray((condensed_run / "run" / "generator.msfl").read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.msfl"
    bad.write_bytes(bytes(data))
    assert main(["verify", str(bad)]) == 2
    assert "hash-mismatch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["condense", "--config", "no-such-preset"], "unknown preset"),
        (["condense", "--config", "tiny", "--data", "/no/such/folder"], "not found"),
        (["condense", "--config", "tiny", "--set", "phase1.epohcs=1"], "unknown key"),
        (["verify", "/no/such/package.msfl"], "not found"),
        (
            [
                "evaluate",
                "--config",
                "tiny",
                "--train",
                "/nope.npz",
                "--test",
                "embedded",
            ],
            "not found",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
