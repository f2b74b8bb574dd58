"""python -m bench [--quick] [--model PATH] [--repeats N] [--out DIR] [--check]

Our speed side by side with raw llama-cpp-python, its server, and llama.cpp's own llama-server.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from . import machine, report, runners, servers

DEFAULT_MODEL = servers.ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="Fewer, shorter runs (under 2 minutes).")
    p.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="GGUF file (default: the SmolLM2 model)."
    )
    p.add_argument("--repeats", type=int, help="Alternating passes per row (default 5, quick 2).")
    p.add_argument("--max-tokens", type=int, help="Tokens per reply (default 256, quick 64).")
    p.add_argument("--threads", type=int, help="Threads for every implementation (default: all cores).")
    p.add_argument("--out", type=Path, default=servers.ROOT / "bench" / "results", help="Where results go.")
    p.add_argument("--check", action="store_true", help="Exit 1 when a figure is far below target (< 0.8x).")
    p.add_argument(
        "--noise-limit",
        type=float,
        default=0.1,
        help="Redo a sample when other processes used more than this share of the machine (default 0.1).",
    )
    p.add_argument(
        "--only",
        help="Comma-separated scenarios to run (default: all; --quick leaves out browser_chat).",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"error: model not found: {args.model} (run make setup, or pass --model)", file=sys.stderr)
        return 2
    scenarios = "load,throughput,multi_turn,long_chat,concurrency,slots" + (
        "" if args.quick else ",browser_chat"
    )
    only = set((args.only or scenarios).split(","))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # gradio_client: no telemetry threads
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    opts = runners.Options(
        model=args.model.resolve(),
        repeats=args.repeats or (3 if args.quick else 5),
        max_tokens=args.max_tokens or (128 if args.quick else 256),
        quick=args.quick,
        # quick (the CI guard): one core is left to the clients and servers' Python, which otherwise takes
        # its time from the model's threads and makes the HTTP rows' ratios swing by 20% on 2 cores
        threads=args.threads or (max(1, machine.cores() - 1) if args.quick else machine.cores()),
        log=log,
        noise_limit=args.noise_limit,
        quiet_wait_s=0.0 if args.quick else 60.0,  # quick: record the noise, do not wait it out
        retries=0 if args.quick else 3,
    )
    setup = servers.Setup(model=opts.model, threads=opts.threads)
    results: dict[str, Any] = {
        "machine": machine.describe(),
        "meta": {
            "quick": opts.quick,
            "model": opts.model.name,
            "threads": opts.threads,
            "n_ctx": setup.n_ctx,
            "flash_attn": setup.flash_attn,
            "repack": setup.repack,
            "repack_why": servers.REPACK_WHY,
            "repeats": opts.repeats,
            "max_tokens": opts.max_tokens,
            "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        },
    }
    if "load" in only:
        log("load: fresh-process probes")
        results["load"] = runners.load(opts, setup)
    bench = runners.Bench(opts, setup)
    try:
        bench.start()
        results["native_missing"] = bench.native_missing
        short = 24 if opts.quick else 64
        if "throughput" in only:
            log("throughput: every path, alternating")
            results["throughput"] = runners.throughput(bench)
        if "multi_turn" in only:
            log("multi-turn: 10 turns, ours and llama_cpp.server")
            results["multi_turn"] = runners.multi_turn(bench, short)
        if "long_chat" in only:
            log("long chat: server CPU per reply at 2 and 200 messages")
            results["long_chat"] = runners.long_chat(bench, 64)  # long enough to see the UI's cost
        if "concurrency" in only:
            log("concurrency: 1, 2, 4, 8 clients")
            # #13's own workload: 128 greedy tokens per client (a quick run keeps its short replies)
            results["concurrency"] = runners.concurrency(bench, short if opts.quick else 128)
        if "slots" in only:
            log("slots: two long chats alternating, then a restart")
            results["slots"] = runners.slots(bench, short)
        if "browser_chat" in only:
            log("browser: a 2- and a 1000-message chat in Chromium")
            results["browser_chat"] = runners.browser_chat(bench, 64)
        if not opts.quick:
            for _ in range(2):
                bench.restart_ours()
        results["servers"] = runners.idle_memory(bench)
    finally:
        bench.close()
    results["meta"]["finished_at"] = time.strftime("%Y-%m-%d %H:%M")
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    summary = report.summarise(results)
    md = report.write(args.out, results, summary)
    print(md.read_text())
    log(f"wrote {md} and {md.with_suffix('.json').name}")
    failed = [c for c in summary["checks"] if c["status"] == "FAIL"]
    if args.check and failed:
        for c in failed:
            print(f"FAIL: {c['name']}: {c['measured']} (want {c['target']})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
