"""`reactdiff render`: an MP4 of a speaker beside drawn faces of the reactions to it."""

from __future__ import annotations

import argparse
from pathlib import Path

from reactdiff import console
from reactdiff.errors import Refused
from reactdiff.request_checks import DEFAULT_ALPHA

DESCRIPTION = """\
The faces are drawn from the 25 emotion values and the 6 pose values of the 3DMM
(reactdiff/render.py documents which channel moves which feature); a bar strip under each face shows
valence, arousal and the 8 expression probabilities. α reactions form a grid; the real listener
(the speaker's partner in the split CSV) is one more face. 25 fps, H.264 + AAC: plays in browsers."""
EPILOG = """\
examples:
  reactdiff generate --model models:/reactdiff@champion --speaker data/store:test --out out/ --max-clips 2
  reactdiff render out/ --corpus data/corpus --out reaction.mp4             # out/'s first clip
  reactdiff render out/ --corpus data/corpus --clip NoXI/001_test/Expert_video/1 --out r.mp4
  reactdiff render models:/reactdiff@champion --out r.mp4 \\
      --speaker data/corpus/test/Audio_files/NoXI/001_test/Expert_video/1.wav
  reactdiff render out/ --corpus data/corpus --renderer mypkg.faceverse:render --out mesh.mp4
      (a 3DMM mesh renderer of your own: f(emotion (25,), 3dmm (58,), size) -> (size, size, 3) uint8)"""


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "render",
        help="an MP4 of a speaker (real video and audio) beside drawn faces of the reactions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument(
        "source", help="a folder written by `reactdiff generate`, or a model (checkpoint or MLflow URI)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the MP4 to write")
    parser.add_argument("--speaker", help="with a model: the speaker, a corpus clip file outside the Emotion tree")
    parser.add_argument("--clip", help="with a folder: the speaker clip to render (default: its first)")
    parser.add_argument(
        "--corpus", type=Path, help="the corpus root, where the folder's speakers came from a store split"
    )
    parser.add_argument("--alpha", type=int, default=DEFAULT_ALPHA, help="with a model: reactions to generate")
    parser.add_argument("--seed", type=int, help="with a model: the generation seed (default: a fixed one)")
    parser.add_argument("--tracking-uri", help="with an MLflow model URI: the tracking server")
    parser.add_argument("--no-truth", action="store_true", help="leave the real listener out")
    parser.add_argument("--face-size", type=int, help="pixels of each face (default: render.FACE_SIZE)")
    parser.add_argument("--still", type=int, metavar="FRAME", help="write this frame as a PNG instead of the video")
    parser.add_argument(
        "--renderer",
        default="drawn",
        help="'drawn' (built in) or package.module:function of your own (e.g. a FaceVerse mesh renderer)",
    )
    return parser


def run(args) -> int:
    from reactdiff.render import render

    # Left out where not given: render's own defaults apply (render is not imported to build the parser).
    given = {name: getattr(args, name) for name in ("seed", "face_size") if getattr(args, name) is not None}
    try:
        path = render(
            args.source,
            args.out,
            speaker=args.speaker,
            clip=args.clip,
            corpus_root=args.corpus,
            alpha=args.alpha,
            tracking_uri=args.tracking_uri,
            truth=not args.no_truth,
            renderer=args.renderer,
            still=args.still,
            **given,
        )
    except (ValueError, FileNotFoundError) as err:
        raise Refused(str(err)) from None
    console.result(f"wrote {path}")
    return 0
