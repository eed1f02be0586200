"""A normal run prints no Lightning advertising, no device banner, no pytree LeafSpec deprecation
and no log_every_n_steps warning on small data; the filters and logger levels do not outlive the
run (issue 20). tests/cli/test_quiet_train.py checks a real process's output."""

from __future__ import annotations

import logging
import warnings

from histoflow.train.fit import fit
from tests.reliability.common import tiny


def test_tiny_run_is_quiet_and_leaves_filters_as_they_were(tmp_path, caplog, capsys):
    filters_before = list(warnings.filters)
    lightning = logging.getLogger("lightning.pytorch")
    level_before = lightning.level
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tiny("train.epochs=1"), tmp_path / "run", quiet=True)
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    out = capsys.readouterr()
    texts += [out.out, out.err]
    for noise in ("💡 Tip", "LeafSpec", "log_every_n_steps", "GPU available", "`Trainer.fit` stopped"):
        assert not any(noise in t for t in texts), noise
    assert warnings.filters == filters_before
    assert lightning.level == level_before
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning_utilities.core.rank_zero"):
        assert not logging.getLogger(name).filters
