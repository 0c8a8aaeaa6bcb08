"""Decode speed with a real streaming client: hearth against llama.cpp's own
llama-server (the runner Ollama spawns per model) and llama-bench, built from
the llama.cpp source hearth links.

Run it through `benches/decode.sh`, which builds everything and passes the
paths in. For each thread count (all cores, then one) it starts one hearth
server and one llama-server, warms both, then runs ROUNDS interleaved rounds
of: hearth, llama-server, llama-bench (the order rotates each round). The
client streams the way the official Python client does: httpx, one line at a
time, every line parsed as JSON. Decode speed is measured at the client: the
tokens after the first, over the time from the first chunk to the last.

Prints one table per thread count: each round's tokens/s, the medians, and
the per-round ratios hearth/llama-server and hearth/llama-bench (median and
spread). Run it alone: ggml threads spin, so anything else on the machine
skews every number.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

HEARTH = os.environ["HEARTH_BIN"]
# Optional: another hearth binary (say, a build of the commit before a
# change) run as a fourth contestant in the same rounds.
BASELINE = os.environ.get("HEARTH_BASELINE_BIN")
LLAMA_BIN = os.environ["LLAMA_TOOLS_BIN"]
MODEL = os.environ["BENCH_MODEL"]
ROUNDS = int(os.environ.get("ROUNDS", "7"))
TOKENS = int(os.environ.get("TOKENS", "64"))
CORES = os.cpu_count() or 1
THREADS = [int(t) for t in os.environ.get("THREADS", f"{CORES},1").split(",")]
# A base-model prompt that runs on well past TOKENS tokens.
PROMPT = (
    "The history of the city begins with a small settlement on the river. "
    "Over the centuries it grew into"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited early: {url}")
        try:
            r = httpx.get(url, timeout=1)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"server did not answer: {url}")


def start_hearth(threads, store, binary=HEARTH, tag="hearth"):
    port = free_port()
    env = dict(os.environ)
    env.update(
        OLLAMA_HOST=f"127.0.0.1:{port}",
        OLLAMA_MODELS=os.path.join(store, f"{tag}-models-{threads}"),
        HEARTH_THREADS=str(threads),
        OLLAMA_KEEP_ALIVE="-1",
        HOME=store,
    )
    log = open(os.path.join(store, f"{tag}-{threads}.log"), "w")
    proc = subprocess.Popen([binary, "serve"], env=env, stderr=log, stdout=log)
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/", proc)
    modelfile = os.path.join(store, "Modelfile")
    with open(modelfile, "w") as f:
        f.write(f"FROM {MODEL}\n")
    subprocess.run(
        [binary, "create", "bench", "-f", modelfile],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, url


def start_llama_server(threads, store):
    port = free_port()
    log = open(os.path.join(store, f"llama-server-{threads}.log"), "w")
    proc = subprocess.Popen(
        [
            os.path.join(LLAMA_BIN, "llama-server"),
            "-m", MODEL,
            "-t", str(threads),
            "-tb", str(threads),
            "-c", "4096",
            "-np", "1",
            "--host", "127.0.0.1",
            "--port", str(port),
        ],
        stderr=log,
        stdout=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/health", proc)
    return proc, url


def rate(n_tokens, t_first, t_last):
    if n_tokens < 2 or t_last <= t_first:
        sys.exit(f"too few tokens to time: {n_tokens}")
    return (n_tokens - 1) / (t_last - t_first)


def run_hearth(url):
    body = {
        "model": "bench",
        "prompt": PROMPT,
        "raw": True,
        "stream": True,
        "options": {"num_predict": TOKENS, "temperature": 0, "seed": 1},
    }
    t_first = None
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            now = time.perf_counter()
            if "error" in chunk:
                sys.exit(f"hearth: {chunk['error']}")
            if t_first is None:
                t_first = now
            if chunk.get("done"):
                return rate(chunk["eval_count"], t_first, now), chunk["eval_count"]
    sys.exit("hearth: stream ended without a final chunk")


def run_llama_server(url):
    body = {
        "prompt": PROMPT,
        "n_predict": TOKENS,
        "temperature": 0,
        "seed": 1,
        "stream": True,
        "cache_prompt": True,
    }
    t_first = None
    with httpx.stream("POST", url + "/completion", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[len("data: "):])
            now = time.perf_counter()
            if t_first is None:
                t_first = now
            if chunk.get("stop"):
                n = chunk["timings"]["predicted_n"]
                return rate(n, t_first, now), n
    sys.exit("llama-server: stream ended without a final chunk")


def run_llama_bench(threads):
    out = subprocess.run(
        [
            os.path.join(LLAMA_BIN, "llama-bench"),
            "-m", MODEL,
            "-p", "0",
            "-n", str(TOKENS),
            "-t", str(threads),
            "-r", "1",
            "-o", "jsonl",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)["avg_ts"], TOKENS
    sys.exit("llama-bench printed no result")


def spread(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def bench(threads, store):
    hearth, hurl = start_hearth(threads, store)
    server, surl = start_llama_server(threads, store)
    procs = [hearth, server]
    runs = {
        "hearth": lambda: run_hearth(hurl),
        "llama-server": lambda: run_llama_server(surl),
        "llama-bench": lambda: run_llama_bench(threads),
    }
    if BASELINE:
        base, burl = start_hearth(threads, store, BASELINE, "baseline")
        procs.append(base)
        runs["baseline"] = lambda: run_hearth(burl)
    try:
        for name, run in runs.items():
            if name != "llama-bench":
                run()  # loads the model, warms the caches
        names = list(runs)
        got = {n: [] for n in names}
        for r in range(ROUNDS):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                tps, _count = runs[n]()
                got[n].append(tps)
            print(
                f"  round {r + 1}: "
                + "  ".join(f"{n} {got[n][-1]:.1f}" for n in names),
                flush=True,
            )
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    med = {n: statistics.median(xs) for n, xs in got.items()}

    def ratio(a, b):
        return spread([x / y for x, y in zip(got[a], got[b])])

    row = (
        f"| {threads} | {med['hearth']:.1f} | {med['llama-server']:.1f} "
        f"| {med['llama-bench']:.1f} | {ratio('hearth', 'llama-server')} "
        f"| {ratio('hearth', 'llama-bench')} | {ratio('llama-server', 'llama-bench')} |"
    )
    if BASELINE:
        row += f" {med['baseline']:.1f} | {ratio('baseline', 'llama-bench')} |"
    return row


def main():
    print(f"model {os.path.basename(MODEL)}, {TOKENS} tokens, {ROUNDS} rounds, {CORES} cores")
    rows = []
    with tempfile.TemporaryDirectory() as store:
        for t in THREADS:
            print(f"threads {t}:", flush=True)
            rows.append(bench(t, store))
    print()
    print("decode tok/s, medians; ratios are per round: median (min–max)")
    head = (
        "| threads | hearth | llama-server | llama-bench "
        "| hearth / llama-server | hearth / llama-bench | llama-server / llama-bench |"
    )
    rule = "| --- | --- | --- | --- | --- | --- | --- |"
    if BASELINE:
        head += " baseline | baseline / llama-bench |"
        rule += " --- | --- |"
    print(head)
    print(rule)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
