import pytest
import torch

from graphdiff.nn.kernels import chunk_width, from_chunks, to_chunks


@pytest.mark.parametrize("nodes, channels, dtype, width", [
    (1000, 32, torch.float32, 32),      # 125 KB per head: stays in cache whole
    (1 << 16, 32, torch.float32, 16),   # one 64-byte line per row
    (1 << 16, 32, torch.float64, 8),
    (1 << 16, 24, torch.float32, 12),   # largest divisor that fits a line
    (1 << 16, 8, torch.float32, 8),
    (1 << 16, 17, torch.float32, 17),   # prime: 1-channel chunks would cost 17 line reads
    (1 << 16, 64, torch.bfloat16, 32),
])
def test_chunk_width(nodes, channels, dtype, width):
    assert chunk_width(nodes, channels, dtype) == width


def test_chunks_round_trip():
    x = torch.randn(5, 3, 12).transpose(0, 1)  # head-major view of [N, H, C]
    chunks = to_chunks(x, 4)
    assert chunks.shape == (3, 3, 5, 4) and chunks.is_contiguous()
    torch.testing.assert_close(chunks[1, 2], x[1, :, 8:12])
    torch.testing.assert_close(from_chunks(chunks), x)
