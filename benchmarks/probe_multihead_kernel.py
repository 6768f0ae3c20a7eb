"""Would a kernel that reads each column index once for all heads scale better?

    pip install ninja   # torch's C++ extension builder needs it; a C++ compiler too
    python benchmarks/probe_multihead_kernel.py [--n 16384 65536] [--rounds 10]

graphdiff runs one torch CSR product per head on the shared structure, so every head streams
the column indices again. This probe compiles (once, about 30 s) the alternative: one pass over
the CSR rows that, for each edge, updates all heads from the node-major operand ``[N, H, C]``.
It prints the fastest time of both at each length, alternated in one process, and their growth.
It is a probe, not a code path of the library: on the 2-core VM of the README the multi-head
kernel was slower at both lengths and grew more (its random reads cover all heads' operand).
"""
from __future__ import annotations

import warnings

import torch
from torch.utils.cpp_extension import load_inline

from bench_common import alternate, growth_row, probe_parser
from graphdiff.nn import diffusion_graph
from graphdiff.patterns import Global, Random, Window

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>

// out[i, h, :] = sum over row i's edges e of values[h, e] * z[col[e], h, :]
// crow, col int32; values [H, E]; z node-major [N, H, C], all contiguous fp32.
torch::Tensor multihead_spmm(torch::Tensor crow, torch::Tensor col, torch::Tensor values,
                             torch::Tensor z) {
  const int64_t rows = crow.size(0) - 1, edges = col.size(0);
  const int64_t heads = z.size(1), channels = z.size(2), width = heads * channels;
  auto out = torch::zeros({rows, heads, channels}, z.options());
  const int* crow_p = crow.data_ptr<int>();
  const int* col_p = col.data_ptr<int>();
  const float* values_p = values.data_ptr<float>();
  const float* z_p = z.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      float* out_row = out_p + i * width;
      for (int64_t e = crow_p[i]; e < crow_p[i + 1]; e++) {
        const float* z_row = z_p + static_cast<int64_t>(col_p[e]) * width;
        for (int64_t h = 0; h < heads; h++) {
          const float a = values_p[h * edges + e];
          #pragma omp simd
          for (int64_t c = 0; c < channels; c++)
            out_row[h * channels + c] += a * z_row[h * channels + c];
        }
      }
    }
  });
  return out;
}
"""


def main() -> None:
    args = probe_parser(__doc__).parse_args()
    warnings.filterwarnings("ignore", message="Sparse")
    kernel = load_inline("graphdiff_probe_multihead", cpp_sources=[SOURCE],
                         functions=["multihead_spmm"],
                         extra_cflags=["-O3", "-march=native", "-fopenmp"])
    H, C = args.heads, args.channels
    products = {}
    for n in args.n:
        graph = diffusion_graph((Window(64) | Global(16) | Random(16, seed=0))(n), (n, n))
        values = torch.rand(H, graph.num_edges)
        z = torch.randn(H, n, C)
        z_node_major = z.transpose(0, 1).contiguous()
        out = torch.empty(H, n, C)
        matrices = [graph.csr(v) for v in values]

        def per_head(matrices=matrices, z=z, out=out) -> None:
            for matrix, x, o in zip(matrices, z, out):
                torch.mm(matrix, x, out=o)

        def multihead(graph=graph, values=values, z=z_node_major) -> torch.Tensor:
            return kernel.multihead_spmm(graph.crow, graph.col, values, z)

        per_head()
        error = (multihead().transpose(0, 1) - out).abs().max().item()
        print(f"n={n}: max |multi-head - per-head| = {error:.2e}", flush=True)
        products[n, "torch, one CSR product per head"] = per_head
        products[n, "multi-head kernel"] = multihead
    times = alternate(products, args.rounds)
    small, large = args.n
    print(f"| product | n={small} ms | n={large} ms | growth (fastest) | growth (median) |")
    print("|---|---:|---:|---:|---:|")
    for name in ("torch, one CSR product per head", "multi-head kernel"):
        print(growth_row(name, times[small, name], times[large, name]))


if __name__ == "__main__":
    main()
