"""The README's Python quick starts run as written, and the figures they quote hold.

Each ```python block is executed in a namespace that defines only the inputs the README leaves
to the reader (`tokens`, `mask`, `x`, `edge_index`, `my_edge_index`), so a renamed function, a
changed signature or a stale import in the README fails here.
"""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def reader_inputs() -> dict:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 40:] = False
    return {
        "tokens": torch.randint(1, 10, (2, 64), generator=generator),
        "mask": mask,
        "x": torch.randn(4096, 64, generator=generator),
        "edge_index": torch.randint(0, 4096, (2, 20000), generator=generator),
        "my_edge_index": lambda n: torch.arange(n).repeat(2, 1),
    }


def test_readme_has_the_quick_starts():
    assert len(BLOCKS) == 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    block = BLOCKS[index]
    if importlib.util.find_spec("torch_sparse") is None:
        # The optional `fast` extra: the line that needs it says so, the rest still runs.
        lines = block.splitlines()
        block = "\n".join(line for line in lines if "to_sparse_tensor" not in line)
        if len(lines) > len(block.splitlines()):
            assert all(
                "needs the `fast` extra" in line for line in lines if "to_sparse_tensor" in line
            )
    namespace = reader_inputs()
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    if "conv = AttentionDiffusion" in block:
        assert namespace["out"].shape == (4096, 4 * 16)
        assert namespace["attn"].shape == (namespace["edge_index"].size(1), 4)
    if "logits = model" in block:
        assert namespace["logits"].shape == (2, 2)


def test_readme_quoted_figures_hold():
    # Lines such as `analysis.spectral_gap(diffuser(), 4096)   # 0.666: an expander`: the
    # number in the comment is what the call returns, to the digits the README gives.
    quoted = re.findall(r"^(analysis\.\w+\(.*\))\s+# ([0-9.e-]+)\b", "\n".join(BLOCKS), re.M)
    assert len(quoted) == 3
    namespace: dict = {}
    exec("import analysis\nfrom graphdiff.patterns import Window, diffuser", namespace)
    for call, figure in quoted:
        assert eval(call, namespace) == pytest.approx(float(figure), rel=0.05), call


def test_readme_is_one_page_whose_links_stay_in_the_repository():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    root = README.parent
    pages = [README, *sorted((root / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(root) and path.exists(), f"{page.name} links {target}"
