"""bench/bench_generate.py rewrites only its own generated block of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

from bench.bench_generate import markers, write_docs


def test_a_marker_quoted_in_prose_is_not_taken_for_the_block(tmp_path: Path):
    begin, end = markers("bench-16")
    doc = tmp_path / "benchmarks.md"
    prose = "The block below (`<!-- bench-16:begin -->`) was measured on an idle machine.\n"
    doc.write_text(f"# Benchmarks\n\n{prose}\n{begin}\nold figures\n{end}\n\nAfter.\n")
    write_docs(doc, f"{begin}\nnew figures\n{end}", "bench-16")
    assert doc.read_text() == f"# Benchmarks\n\n{prose}\n{begin}\nnew figures\n{end}\n\nAfter.\n"


def test_a_missing_block_is_appended_and_other_blocks_are_kept(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    begin, end = markers("bench")
    doc.write_text(f"# Benchmarks\n\n{begin}\nkept\n{end}\n")
    null_begin, null_end = markers("bench-null")
    write_docs(doc, f"{null_begin}\nnull\n{null_end}", "bench-null")
    assert doc.read_text() == f"# Benchmarks\n\n{begin}\nkept\n{end}\n\n{null_begin}\nnull\n{null_end}\n"
