"""Reactions as pictures: the drawn face (face.py, numpy only), then videos of it beside the
speaker (video.py, PyAV). `reactdiff render`, which reads a `generate` folder or generates first, is
reactdiff/commands/render.py."""
