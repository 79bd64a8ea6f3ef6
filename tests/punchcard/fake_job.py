"""Test double for the job interpreter: invoked as ``fake_job.py -m distkeras <command> <options>``
(through a wrapper script given to ``punchcard serve --python``), it behaves like a tiny
``distkeras train`` / ``distkeras simulate`` so that the server's real code path (argv, process
group, logs, result, files) is exercised without Spark or Keras.

Behaviour: writes ``self.pid`` and spawns a child (``child.pid``) that sleeps and is *not*
cleaned up (a leaky job, like a stray JVM); prints one progress line per epoch on stderr,
sleeping 0.05 s per epoch (so ``--epochs=100000`` is a long job); ``--workers=13`` makes it
fail; ``train`` writes ``model.keras`` (a zip with config.json), ``history.json`` and
``curves.png`` under ``--out``; the last stdout line is a JSON object of metrics. Every run draws
a random ``nonce`` that goes into its result and its files, and its result echoes the options it
got (``argv``): the tests compare what the server reports and serves with what this job wrote
and with the command line the spec should give, not with constants of this file.
"""

import json
import os
import subprocess
import sys
import time
import zipfile

args = sys.argv[1:]
if args[:2] != ["-m", "distkeras"] or len(args) < 3:
    sys.exit(f"fake_job: unexpected argv {args!r}")
command, rest = args[2], args[3:]
opts, params, conf = {}, {}, {}
for a in rest:
    if a == "--json":
        opts["json"] = "1"
        continue
    if not a.startswith("--") or "=" not in a:
        sys.exit(f"fake_job: option not in --name=value form: {a!r}")
    key, _, value = a[2:].partition("=")
    if key == "param":
        k, _, v = value.partition("=")
        params[k] = v
    elif key == "conf":
        k, _, v = value.partition("=")
        conf[k] = v
    else:
        opts[key] = value

with open("self.pid", "w") as fh:
    fh.write(str(os.getpid()))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open("child.pid", "w") as fh:
    fh.write(str(child.pid))

print(f"fake {command} starting with {len(rest)} options", file=sys.stderr, flush=True)
print("some chatter on stdout", flush=True)
epochs = int(opts.get("epochs", "2"))
for epoch in range(epochs):
    time.sleep(0.05)
    print(f"epoch {epoch + 1}/{epochs} loss={1.0 / (epoch + 1):.4f}", file=sys.stderr, flush=True)
if opts.get("workers") == "13":
    print("error: fake failure requested (13 workers)", file=sys.stderr, flush=True)
    sys.exit(3)

nonce = os.urandom(8).hex()
result = {"command": command, "argv": rest, "nonce": nonce, "epochs": epochs, "loss": round(1.0 / epochs, 4), "params": params, "conf": conf}
if command == "train":
    out = opts["out"]
    os.makedirs(out, exist_ok=True)
    if "model" in opts:
        result["model_in"] = os.path.basename(opts["model"])
        result["model_in_exists"] = os.path.isfile(opts["model"])
    with zipfile.ZipFile(os.path.join(out, "model.keras"), "w") as zf:
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"name": f"trained-{nonce}"}}))
        zf.writestr("metadata.json", json.dumps({"keras_version": "fake"}))
    with open(os.path.join(out, "history.json"), "w") as fh:
        json.dump({"nonce": nonce, "loss": [1.0 / (e + 1) for e in range(epochs)]}, fh)
    with open(os.path.join(out, "curves.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\nfake" + nonce.encode())
print(json.dumps(result), flush=True)
