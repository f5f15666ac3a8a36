"""`python -m allm_proxy ...` is `allm-proxy ...` (what `allm-proxy run` starts its proxy with)."""

from .cli import main

main(prog_name="allm-proxy")
