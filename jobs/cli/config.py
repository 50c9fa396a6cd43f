"""`oasis config`: print the default config, every parameter documented (TOML)."""
from __future__ import annotations

from pipelines.config import defaults_toml


def register(sub) -> None:
    p = sub.add_parser("config", help="print the default config (every parameter, documented)")
    p.set_defaults(func=main, beam=False)


def main(_args, _beam_args) -> int:
    print(defaults_toml())
    return 0
