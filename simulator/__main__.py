"""`python -m simulator [--host H] [--port P] [--api-key K]`: serve the simulator."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(description="Meshgate's provider simulator (not a provider).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--api-key",
        default=None,
        help="Expected API key (default: MESHGATE_SIMULATOR_API_KEY, else any key is accepted).",
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.api_key:
        # The package (and its app) is imported before this runs: set both, so worker
        # processes started by uvicorn read the key from the environment too.
        os.environ["MESHGATE_SIMULATOR_API_KEY"] = args.api_key
        from . import app

        app.api_key = args.api_key

    import uvicorn

    uvicorn.run(
        "simulator:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        # The cheapest event loop and HTTP parser: the simulator is the benchmarks' upstream.
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
