"""Write k8s/ ready to apply with your image: `make manifests IMAGE=... [PULL_SECRET=...]`.

The files under k8s/ name the image `ochinai:<version>` (what `docker build -t
ochinai:<version>` tags) so that `kubectl apply -f k8s/` works as it is on a cluster that has that
image. For a registry, one command sets it everywhere, a digest pins it, and an image
pull Secret goes into every pod:

    make manifests IMAGE=registry.example.com/ochinai@sha256:<digest> PULL_SECRET=regcred
    kubectl apply -f build/k8s/

Every manifest (k8s/*.yaml, k8s/examples/, k8s/monitoring/) is copied to the output
folder with each `image:` of ours replaced, and with PULL_SECRET an
`imagePullSecrets` beside each pod's containers. Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
IMAGE_LINE = re.compile(r"^(?P<indent>\s*(- )?)image: ochinai:[^\s#]+\s*$", re.MULTILINE)
CONTAINERS = re.compile(r"^(?P<indent>\s*)containers:\s*$", re.MULTILINE)
# A reference as `docker pull` takes it: [registry[:port]/]name[:tag][@sha256:digest]
REFERENCE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def render(text: str, image: str, pull_secret: str | None) -> tuple[str, int]:
    """A manifest's text with our image replaced and the pull Secret added; how many
    images it replaced."""
    text, replaced = IMAGE_LINE.subn(lambda m: f"{m['indent']}image: {image}", text)
    if pull_secret:
        text = CONTAINERS.sub(
            lambda m: (
                f"{m['indent']}imagePullSecrets:\n{m['indent']}  - name: {pull_secret}\n"
                f"{m['indent']}containers:"
            ),
            text,
        )
    return text, replaced


def write(image: str, pull_secret: str | None, out: Path) -> int:
    """Render every manifest into ``out`` (emptied first); the images replaced."""
    if not REFERENCE.match(image):
        raise SystemExit(
            f"IMAGE={image!r} is not an image reference (registry/name:tag or name@sha256:...)"
        )
    if pull_secret and not SECRET_NAME.match(pull_secret):
        raise SystemExit(f"PULL_SECRET={pull_secret!r} is not a Secret's name")
    shutil.rmtree(out, ignore_errors=True)
    total = 0
    for path in sorted(K8S.rglob("*.yaml")):
        target = out / path.relative_to(K8S)
        target.parent.mkdir(parents=True, exist_ok=True)
        text, replaced = render(path.read_text(encoding="utf-8"), image, pull_secret)
        target.write_text(text, encoding="utf-8")
        total += replaced
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="the image, a digest pins it")
    parser.add_argument("--pull-secret", default="", help="an image pull Secret's name")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "k8s")
    args = parser.parse_args(argv)
    total = write(args.image, args.pull_secret or None, args.out)
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"wrote {shown}/: {total} containers run {args.image}", flush=True)
    if args.pull_secret:
        print(f"  every pod pulls it with the Secret {args.pull_secret}", flush=True)
    print(f"  apply it with: kubectl apply -f {shown}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
