"""Evaluate a directory of generated outputs: ``python evaluate.py run_dir=outputs/... [mode=reference] ...``.

Thin Hydra entry point around :func:`magnet.evaluation.evaluate_directory` (options in ``conf/evaluate.yaml``).
User errors print ``error: <one line>`` on stderr and exit with code 2, leaving no output files.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from magnet.cli import register_resolvers

register_resolvers()  # the resolvers conf/evaluate.yaml uses (sweep_only)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from magnet.errors import ConfigError, MagnetError
    from magnet.evaluation import evaluate_directory
    from magnet.utils import require_bool, require_number

    try:
        if cfg.run_dir in (None, ""):
            raise ConfigError("run_dir is required: python evaluate.py run_dir=<directory of sampled *.npz outputs>")
        print_summary = require_bool("print_summary", cfg.print_summary)
        result = evaluate_directory(
            cfg.run_dir,
            mode=cfg.mode,
            whole_seq=require_bool("whole_seq", cfg.whole_seq),
            seq_len=None if cfg.seq_len is None else require_number("seq_len", cfg.seq_len, integer=True),
            sample_num=None if cfg.sample_num is None else require_number("sample_num", cfg.sample_num, integer=True),
            test_set=cfg.test_set,
            fps=None if cfg.fps is None else require_number("fps", cfg.fps, above=0),
            body_model=cfg.body_model,
            seed=require_number("seed", cfg.seed, integer=True),
            allow_missing_config=require_bool("allow_missing_config", cfg.allow_missing_config),
            baselines=require_bool("baselines", cfg.baselines),
        )
    except MagnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if print_summary:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(result.summary))
    for path in result.files.values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
