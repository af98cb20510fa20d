"""`make demo`: the bundled demo model on a scene it has never seen, then the app.

1. draws a scene of the synthetic world with one red balloon -- seed 1, while the demo model was
   trained on seed 0, so the picture is new to it -- into ``OUT/scene.png``;
2. asks ``[detection] red balloon`` with ``mgv2 predict`` (the bundled demo model, the default of
   every command) and writes the boxes drawn into ``OUT/annotated.png`` and the answer as JSON;
3. starts the Streamlit app with the same model (``--no-app``: only prints how to start it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

from mgv2.cli import main as cli_main
from mgv2.config import DEFAULT_MODEL, REPO_DIR
from mgv2.io import atomic_write_text

DEMO_SEED = 1  # unseen world: the demo model trained on seed 0
DEMO_PROMPT = "[detection] red balloon"


def demo_scene_image():
    """``(PIL image, scene)``: the first seed-1 scene with exactly one red balloon."""
    from PIL import Image

    from mgv2.synth import find_scene
    from mgv2.synth.render import render

    _, scene = find_scene(DEMO_SEED, "red balloon")
    return Image.fromarray(render(scene)), scene


def app_command(model: str) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(REPO_DIR / "app" / "main.py"),
            "--server.headless", "true", "--", "--model", model]


def run(out: Path, model: str = DEFAULT_MODEL, prompt: str = DEMO_PROMPT, app: bool = False) -> int:
    out.mkdir(parents=True, exist_ok=True)
    image, scene = demo_scene_image()
    scene_path = out / "scene.png"
    image.save(scene_path)
    truth = [o.name() for o in scene.objects]
    print(f"scene written to {scene_path} (objects: {', '.join(truth)})")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["predict", "--model", model, "--image", str(scene_path), "--out", str(out / "annotated.png"),
                       "--max-new-tokens", "60", "--json", prompt])
    if rc != 0:
        return rc
    payload = json.loads(buf.getvalue())
    atomic_write_text(out / "answer.json", json.dumps(payload, indent=2) + "\n")
    print(f"{prompt}\n  -> {payload['text']}")
    print(f"boxes drawn into {out / 'annotated.png'}; answer in {out / 'answer.json'}")
    cmd = app_command(model)
    if not app:
        print("open the app with the same model:\n  " + " ".join(cmd[:1] + ["-m", "streamlit", "run", "app/main.py"]))
        return 0
    if not _has_streamlit():
        print("streamlit is not installed (pip install -e '.[app]'); then: streamlit run app/main.py")
        return 0
    print("starting the app (Ctrl-C stops it); open the URL it prints")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _has_streamlit() -> bool:
    import importlib.util

    return importlib.util.find_spec("streamlit") is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompt", default=DEMO_PROMPT)
    ap.add_argument("--app", action=argparse.BooleanOptionalAction, default=False,
                    help="start the Streamlit app afterwards (make demo does; make demo APP=0 does not)")
    args = ap.parse_args(argv)
    return run(Path(args.out), args.model, args.prompt, app=args.app)


if __name__ == "__main__":
    raise SystemExit(main())
