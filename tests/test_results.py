"""Every committed result claim is recomputed from the committed CSVs and quoted exactly in its README, and every
committed table is what `ropebench table` prints for the committed runs (scripts/check_results.py)."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_every_results_claim_is_supported_and_quoted(capsys):
    sys.path.insert(0, str(SCRIPTS))
    try:
        import check_results

        code = check_results.main()
    finally:
        sys.path.remove(str(SCRIPTS))
    out = capsys.readouterr().out
    assert code == 0, "\n".join(line for line in out.splitlines() if line.startswith("FAIL"))
    assert "PASS" in out
