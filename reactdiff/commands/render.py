"""`reactdiff render`: an MP4 of a speaker beside drawn faces of the reactions to it."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from reactdiff import console
from reactdiff.data import corpus, layout
from reactdiff.errors import Refused
from reactdiff.render.face import FACE_SIZE, Face, Renderer, load_renderer
from reactdiff.request_checks import DEFAULT_ALPHA

DESCRIPTION = """\
The faces are drawn from the 25 emotion values and the 6 pose values of the 3DMM
(reactdiff/render/face.py documents which channel moves which feature); a bar strip under each face shows
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
    parser.add_argument("--seed", type=int, default=0, help="with a model: the generation seed (default %(default)s)")
    parser.add_argument("--tracking-uri", help="with an MLflow model URI: the tracking server")
    parser.add_argument("--no-truth", action="store_true", help="leave the real listener out")
    parser.add_argument("--face-size", type=int, default=FACE_SIZE, help="pixels of each face (default %(default)s)")
    parser.add_argument("--still", type=int, metavar="FRAME", help="write this frame as a PNG instead of the video")
    parser.add_argument(
        "--renderer",
        default="drawn",
        help="'drawn' (built in) or package.module:function of your own (e.g. a FaceVerse mesh renderer)",
    )
    return parser


def run(args) -> int:
    try:
        path = render(
            args.source,
            args.out,
            speaker=args.speaker,
            clip=args.clip,
            corpus_root=args.corpus,
            alpha=args.alpha,
            seed=args.seed,
            tracking_uri=args.tracking_uri,
            truth=not args.no_truth,
            face_size=args.face_size,
            renderer=args.renderer,
            still=args.still,
        )
    except (ValueError, FileNotFoundError) as err:
        raise Refused(str(err)) from None
    console.result(f"wrote {path}")
    return 0


def render(
    source: str | Path,
    out: str | Path,
    speaker: str | Path | None = None,
    clip: str | None = None,
    corpus_root: str | Path | None = None,
    alpha: int = DEFAULT_ALPHA,
    seed: int = 0,
    tracking_uri: str | None = None,
    truth: bool = True,
    face_size: int = FACE_SIZE,
    renderer: str = "drawn",
    still: int | None = None,
) -> Path:
    """An MP4 of a speaker and the listener reactions to it.

    `source` is a folder written by `generate` (its `clip`, default the first), or a model
    (checkpoint or MLflow URI) that generates `alpha` reactions to `speaker`, a corpus clip file,
    first. The real listener (the speaker's partner in the split CSV) is
    one more face unless `truth` is off. With `still`, that frame is written as a PNG instead."""
    draw = load_renderer(renderer)  # a bad hook is refused before any generation
    source_path = Path(str(source))
    if (source_path / layout.SUMMARY_FILE).is_file():
        return _render_folder(source_path, out, clip, corpus_root, truth, face_size, draw, still)
    if speaker is None:
        raise ValueError(
            f"'{source}' is not a folder written by `reactdiff generate`, so it is taken as a "
            "model, which needs --speaker <corpus clip file>, e.g. "
            "<root>/test/Audio_files/NoXI/<session>/Expert_video/1.wav"
        )
    from reactdiff.generate import generate_to_dir  # torch: not imported to build the parser

    with tempfile.TemporaryDirectory(prefix="reactdiff-render-") as folder:
        generate_to_dir(source, speaker, folder, alpha=alpha, seed=seed, tracking_uri=tracking_uri)
        return _render_folder(Path(folder), out, clip, corpus_root, truth, face_size, draw, still)


def _render_folder(
    folder: Path,
    out: str | Path,
    clip: str | None,
    corpus_root: str | Path | None,
    truth: bool,
    face_size: int,
    draw: Renderer,
    still: int | None,
) -> Path:
    from reactdiff.render import video  # matplotlib and PyAV's encoders: not imported to build the parser

    summary, clip, faces = read_generated(folder, clip)
    root, split = _corpus_split(summary, Path(corpus_root) if corpus_root else None, folder)
    frames = int(summary["frames"])
    speaker_clip = corpus.load_clip(root, split, clip, frames)
    listener = partner(root, split, clip) if truth else None
    if listener is not None:
        real = corpus.load_clip(root, split, listener, frames)
        faces.append(Face("real listener", real.emotion, real.face3d))
    if still is not None:
        return video.write_still(out, speaker_clip, faces, still, face_size, draw, f"speaker {clip}")
    return video.write_video(out, speaker_clip, faces, face_size, draw, title=f"speaker {clip}")


def _corpus_split(summary: dict, corpus_root: Path | None, source: Path) -> tuple[Path, str]:
    """Where the speakers of a `generate` run live: a corpus clip names its own root and split; a
    store split names only the split, and its corpus must be given."""
    speaker = str(summary["speaker"])
    store, _, split = speaker.rpartition(":")
    if store and (Path(store) / "manifest.json").is_file():
        if corpus_root is None:
            raise ValueError(
                f"{source / layout.SUMMARY_FILE}: speaker '{speaker}' is a feature-store split; "
                "its real video and audio are in the corpus it was prepared from: pass --corpus ROOT"
            )
        return Path(corpus_root), split
    root, split, _ = corpus.locate_clip(speaker)
    return (Path(corpus_root) if corpus_root else root), split


def partner(root: Path, split: str, clip: str) -> str | None:
    """The other person of `clip`'s dyad row in the split CSV (its real listener), if listed."""
    for pair in corpus.read_split(root, split):
        if pair.speaker.path == clip:
            return pair.listener.path
        if pair.listener.path == clip:
            return pair.speaker.path
    return None


def read_generated(folder: str | Path, clip: str | None = None) -> tuple[dict, str, list[Face]]:
    """(generation.json, clip, one Face per reaction) of a `generate` folder; `clip` defaults to
    its first. Emotion comes from `emotion.npy` (raw AU probabilities) where `generate` wrote it,
    else from the per-clip CSVs (AU occurrences); 3DMM from the per-reaction `.npy` files."""
    folder = Path(folder)
    summary_path = folder / layout.SUMMARY_FILE
    if not summary_path.is_file():
        raise FileNotFoundError(f"{folder}: no generation.json; expected a folder written by `reactdiff generate`")
    summary = json.loads(summary_path.read_text())
    clips = list(summary["clips"])
    clip = clip or clips[0]
    if clip not in clips:
        raise ValueError(
            f"{summary_path}: clip '{clip}' was not generated (it has: {', '.join(clips[:5])}"
            f"{', ...' if len(clips) > 5 else ''})"
        )
    reactions = folder / layout.REACTIONS_DIR / clip
    frames, alpha = int(summary["frames"]), int(summary["alpha"])
    if (folder / layout.EMOTION_FILE).is_file():
        emotion = np.load(folder / layout.EMOTION_FILE, mmap_mode="r")[clips.index(clip)]
    else:
        emotion = np.stack([corpus.read_emotion(reactions / f"{k}.csv") for k in range(alpha)])
    faces = [
        Face(f"reaction {k}", np.asarray(emotion[k], np.float32), corpus.read_face3d(reactions / f"{k}.npy", frames))
        for k in range(alpha)
    ]
    return summary, clip, faces
