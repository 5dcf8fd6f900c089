// Fused selective scan for CPU: forward and backward (mamba_ssm `selective_scan_ref` semantics).
//
// Layout of the work: one work item = (batch b, block of W channels of one B/C group). The W channels
// of a block sit in the SIMD lanes, so every per-step operation is a plain lane-wise loop that the
// compiler vectorises without horizontal sums: the state x[n][W] lives in registers / L1, and
// u, delta, B, C are read once. Work items run in parallel with at::parallel_for (OpenMP).
//
// Recurrence (per channel, per state n):  dA_t = exp(dt_t * A_n)
//                                          x_t  = dA_t * x_{t-1} + dt_t * u_t * B_t[n]
//                                          y_t  = sum_n C_t[n] * x_t[n] + D * u_t ;  out = y * silu(z)
// Backward: reverse-time scan of h = dL/dx, with the states of each chunk of kChunk steps recomputed
// from a checkpoint stored by the forward (so memory is L / kChunk states, not L).
// delta_bias and softplus are applied by the caller (elementwise, in PyTorch) before the kernel.

// Only ATen and the op registry are included (no torch/extension.h, no pybind11): this halves the
// one-time build. The ops appear as torch.ops.clearmamba_scan.{forward, backward}.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kChunk = 32;  // steps per checkpoint; also the tile length of the I/O copies
constexpr int kMaxState = 64;

template <typename scalar_t> struct Lanes;
template <> struct Lanes<float> { static constexpr int value = 16; };
template <> struct Lanes<double> { static constexpr int value = 8; };

// exp(x) = 2^k * exp(r), r = x - k ln2: Cephes polynomial, rel. error ~1e-7, written so that a loop over
// lanes vectorises (no libm call). Inputs below -87 are clamped (result ~1.6e-38 instead of 0).
inline float vexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  float k = x * 1.44269504088896341f + 12582912.0f;  // round to nearest with the 1.5*2^23 trick
  k -= 12582912.0f;
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double vexp(double x) { return std::exp(x); }  // float64 is for gradcheck: exactness first

template <typename scalar_t> inline scalar_t sigmoid(scalar_t v) {
  return scalar_t(1) / (scalar_t(1) + vexp(-v));
}

struct Geometry {
  int64_t batch, dim, len, nstate, groups, dim_per_group, blocks_per_group, blocks, chunks;
};

// Copy rows [ch0, ch0 + lanes) x [t0, t0 + steps) of a (b, d, l) tensor into tile[t][c] (zero padded).
template <typename scalar_t, int W>
inline void load_tile(const scalar_t* base, int64_t len, int64_t t0, int64_t steps, int lanes,
                      scalar_t* tile) {
  std::fill(tile, tile + kChunk * W, scalar_t(0));
  for (int c = 0; c < lanes; ++c) {
    const scalar_t* row = base + c * len + t0;
    for (int64_t t = 0; t < steps; ++t) tile[t * W + c] = row[t];
  }
}

template <typename scalar_t, int W>
inline void store_tile(scalar_t* base, int64_t len, int64_t t0, int64_t steps, int lanes,
                       const scalar_t* tile) {
  for (int c = 0; c < lanes; ++c) {
    scalar_t* row = base + c * len + t0;
    for (int64_t t = 0; t < steps; ++t) row[t] = tile[t * W + c];
  }
}

// B or C of one group, (n, l) rows -> tile[t][n]
template <typename scalar_t>
inline void load_state_tile(const scalar_t* base, int64_t len, int64_t t0, int64_t steps, int n_state,
                            scalar_t* tile) {
  for (int n = 0; n < n_state; ++n) {
    const scalar_t* row = base + n * len + t0;
    for (int64_t t = 0; t < steps; ++t) tile[t * n_state + n] = row[t];
  }
}

template <typename scalar_t, int W>
struct BlockParams {
  int64_t b, group, ch0;
  int lanes;
  scalar_t A[kMaxState][W];  // A[n][lane], zero on padded lanes
  scalar_t D[W];
};

template <typename scalar_t, int W>
inline void init_block(const Geometry& g, int64_t item, const scalar_t* A, const scalar_t* D,
                       BlockParams<scalar_t, W>& p) {
  p.b = item / g.blocks;
  const int64_t blk = item % g.blocks;
  p.group = blk / g.blocks_per_group;
  p.ch0 = p.group * g.dim_per_group + (blk % g.blocks_per_group) * W;
  p.lanes = static_cast<int>(std::min<int64_t>(W, (p.group + 1) * g.dim_per_group - p.ch0));
  for (int n = 0; n < g.nstate; ++n)
    for (int c = 0; c < W; ++c) p.A[n][c] = c < p.lanes ? A[(p.ch0 + c) * g.nstate + n] : scalar_t(0);
  for (int c = 0; c < W; ++c) p.D[c] = (D != nullptr && c < p.lanes) ? D[p.ch0 + c] : scalar_t(0);
}

// ---------------------------------------------------------------------------------------------------
// forward
// ---------------------------------------------------------------------------------------------------
template <typename scalar_t, int kN>
void forward_kernel(const Geometry& g, const scalar_t* u, const scalar_t* dt, const scalar_t* A,
                    const scalar_t* B, const scalar_t* C, const scalar_t* D, const scalar_t* z,
                    scalar_t* out, scalar_t* ckpt) {
  constexpr int W = Lanes<scalar_t>::value;
  const int n_state = kN > 0 ? kN : static_cast<int>(g.nstate);
  at::parallel_for(0, g.batch * g.blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buf(5 * kChunk * W + 2 * kChunk * n_state);
    scalar_t* u_t = buf.data();
    scalar_t* dt_t = u_t + kChunk * W;
    scalar_t* z_t = dt_t + kChunk * W;
    scalar_t* o_t = z_t + kChunk * W;
    scalar_t* B_t = o_t + kChunk * W;
    scalar_t* C_t = B_t + kChunk * n_state;
    BlockParams<scalar_t, W> p;
    alignas(64) scalar_t x[kMaxState][W];
    for (int64_t item = begin; item < end; ++item) {
      init_block<scalar_t, W>(g, item, A, D, p);
      const int64_t row0 = (p.b * g.dim + p.ch0) * g.len;
      const int64_t bc0 = (p.b * g.groups + p.group) * g.nstate * g.len;
      for (int n = 0; n < n_state; ++n)
        for (int c = 0; c < W; ++c) x[n][c] = 0;
      for (int64_t chunk = 0; chunk < g.chunks; ++chunk) {
        const int64_t t0 = chunk * kChunk, steps = std::min(kChunk, g.len - t0);
        if (ckpt != nullptr) {
          scalar_t* dst = ckpt + ((item * g.chunks) + chunk) * n_state * W;
          for (int n = 0; n < n_state; ++n)
            for (int c = 0; c < W; ++c) dst[n * W + c] = x[n][c];
        }
        load_tile<scalar_t, W>(u + row0, g.len, t0, steps, p.lanes, u_t);
        load_tile<scalar_t, W>(dt + row0, g.len, t0, steps, p.lanes, dt_t);
        if (z != nullptr) load_tile<scalar_t, W>(z + row0, g.len, t0, steps, p.lanes, z_t);
        load_state_tile(B + bc0, g.len, t0, steps, n_state, B_t);
        load_state_tile(C + bc0, g.len, t0, steps, n_state, C_t);
        for (int64_t t = 0; t < steps; ++t) {
          const scalar_t* ut = u_t + t * W;
          const scalar_t* dtt = dt_t + t * W;
          alignas(64) scalar_t du[W], y[W];
          for (int c = 0; c < W; ++c) {
            du[c] = dtt[c] * ut[c];
            y[c] = p.D[c] * ut[c];
          }
          for (int n = 0; n < n_state; ++n) {
            const scalar_t bn = B_t[t * n_state + n], cn = C_t[t * n_state + n];
            for (int c = 0; c < W; ++c) {
              x[n][c] = vexp(dtt[c] * p.A[n][c]) * x[n][c] + du[c] * bn;
              y[c] += x[n][c] * cn;
            }
          }
          if (z != nullptr) {
            const scalar_t* zt = z_t + t * W;
            for (int c = 0; c < W; ++c) y[c] *= zt[c] * sigmoid(zt[c]);
          }
          for (int c = 0; c < W; ++c) o_t[t * W + c] = y[c];
        }
        store_tile<scalar_t, W>(out + row0, g.len, t0, steps, p.lanes, o_t);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// backward
// ---------------------------------------------------------------------------------------------------
template <typename scalar_t, int kN>
void backward_kernel(const Geometry& g, const scalar_t* u, const scalar_t* dt, const scalar_t* A,
                     const scalar_t* B, const scalar_t* C, const scalar_t* D, const scalar_t* z,
                     const scalar_t* ckpt, const scalar_t* gout, scalar_t* gu, scalar_t* gdt,
                     scalar_t* gA_part, scalar_t* gB_part, scalar_t* gC_part, scalar_t* gD_part,
                     scalar_t* gz) {
  constexpr int W = Lanes<scalar_t>::value;
  const int n_state = kN > 0 ? kN : static_cast<int>(g.nstate);
  at::parallel_for(0, g.batch * g.blocks, 1, [&](int64_t begin, int64_t end) {
    // tiles: u, dt, z, gout, y (pre-gate output), gu, gdt, gz | B, C, gB, gC | states, decays
    std::vector<scalar_t> buf(8 * kChunk * W + 4 * kChunk * n_state + 2 * kChunk * n_state * W);
    scalar_t* u_t = buf.data();
    scalar_t* dt_t = u_t + kChunk * W;
    scalar_t* z_t = dt_t + kChunk * W;
    scalar_t* go_t = z_t + kChunk * W;
    scalar_t* y_t = go_t + kChunk * W;
    scalar_t* gu_t = y_t + kChunk * W;
    scalar_t* gdt_t = gu_t + kChunk * W;
    scalar_t* gz_t = gdt_t + kChunk * W;
    scalar_t* B_t = gz_t + kChunk * W;
    scalar_t* C_t = B_t + kChunk * n_state;
    scalar_t* gB_t = C_t + kChunk * n_state;
    scalar_t* gC_t = gB_t + kChunk * n_state;
    scalar_t* xs = gC_t + kChunk * n_state;  // xs[t][n][c] = x_t, recomputed per chunk
    scalar_t* dAs = xs + kChunk * n_state * W;
    BlockParams<scalar_t, W> p;
    alignas(64) scalar_t h[kMaxState][W];   // dL/dx_t, carried backwards in time
    alignas(64) scalar_t gA[kMaxState][W];  // sum over time of dL/dA, per lane
    alignas(64) scalar_t gD[W];
    for (int64_t item = begin; item < end; ++item) {
      init_block<scalar_t, W>(g, item, A, D, p);
      const int64_t row0 = (p.b * g.dim + p.ch0) * g.len;
      const int64_t bc0 = (p.b * g.groups + p.group) * g.nstate * g.len;
      for (int n = 0; n < n_state; ++n)
        for (int c = 0; c < W; ++c) h[n][c] = gA[n][c] = 0;
      for (int c = 0; c < W; ++c) gD[c] = 0;
      for (int64_t chunk = g.chunks - 1; chunk >= 0; --chunk) {
        const int64_t t0 = chunk * kChunk, steps = std::min(kChunk, g.len - t0);
        const scalar_t* x0 = ckpt + ((item * g.chunks) + chunk) * n_state * W;  // x_{t0 - 1}
        load_tile<scalar_t, W>(u + row0, g.len, t0, steps, p.lanes, u_t);
        load_tile<scalar_t, W>(dt + row0, g.len, t0, steps, p.lanes, dt_t);
        load_tile<scalar_t, W>(gout + row0, g.len, t0, steps, p.lanes, go_t);
        if (z != nullptr) load_tile<scalar_t, W>(z + row0, g.len, t0, steps, p.lanes, z_t);
        load_state_tile(B + bc0, g.len, t0, steps, n_state, B_t);
        load_state_tile(C + bc0, g.len, t0, steps, n_state, C_t);
        // recompute the chunk's states (and the pre-gate output when z is given)
        for (int64_t t = 0; t < steps; ++t) {
          const scalar_t* ut = u_t + t * W;
          const scalar_t* dtt = dt_t + t * W;
          const scalar_t* xp = t == 0 ? x0 : xs + (t - 1) * n_state * W;
          scalar_t* xt = xs + t * n_state * W;
          scalar_t* dAt = dAs + t * n_state * W;
          alignas(64) scalar_t du[W], y[W];
          for (int c = 0; c < W; ++c) {
            du[c] = dtt[c] * ut[c];
            y[c] = p.D[c] * ut[c];
          }
          for (int n = 0; n < n_state; ++n) {
            const scalar_t bn = B_t[t * n_state + n], cn = C_t[t * n_state + n];
            for (int c = 0; c < W; ++c) {
              const scalar_t dA = vexp(dtt[c] * p.A[n][c]);
              dAt[n * W + c] = dA;
              xt[n * W + c] = dA * xp[n * W + c] + du[c] * bn;
              y[c] += xt[n * W + c] * cn;
            }
          }
          for (int c = 0; c < W; ++c) y_t[t * W + c] = y[c];
        }
        // reverse-time scan
        for (int64_t t = steps - 1; t >= 0; --t) {
          const scalar_t* ut = u_t + t * W;
          const scalar_t* dtt = dt_t + t * W;
          const scalar_t* xp = t == 0 ? x0 : xs + (t - 1) * n_state * W;
          const scalar_t* xt = xs + t * n_state * W;
          const scalar_t* dAt = dAs + t * n_state * W;
          alignas(64) scalar_t g0[W], du[W], gdt_c[W], gu_c[W];
          for (int c = 0; c < W; ++c) g0[c] = go_t[t * W + c];
          if (z != nullptr) {
            // out = y * z * s(z);  d silu(z)/dz = s (1 + z (1 - s))
            for (int c = 0; c < W; ++c) {
              const scalar_t zc = z_t[t * W + c], s = sigmoid(zc);
              gz_t[t * W + c] = g0[c] * y_t[t * W + c] * s * (scalar_t(1) + zc * (scalar_t(1) - s));
              g0[c] *= zc * s;
            }
          }
          for (int c = 0; c < W; ++c) {
            du[c] = dtt[c] * ut[c];
            gD[c] += g0[c] * ut[c];
            gu_c[c] = p.D[c] * g0[c];
            gdt_c[c] = 0;
          }
          for (int n = 0; n < n_state; ++n) {
            const scalar_t bn = B_t[t * n_state + n], cn = C_t[t * n_state + n];
            scalar_t sc = 0, sb = 0;
#pragma omp simd reduction(+ : sc, sb)
            for (int c = 0; c < W; ++c) {
              const scalar_t hn = h[n][c] + g0[c] * cn;  // dL/dx_t
              sc += g0[c] * xt[n * W + c];                // dL/dC_t[n]
              sb += hn * du[c];                           // dL/dB_t[n]
              const scalar_t hdx = hn * dAt[n * W + c] * xp[n * W + c];
              gdt_c[c] += hn * bn * ut[c] + hdx * p.A[n][c];
              gu_c[c] += hn * dtt[c] * bn;
              gA[n][c] += hdx * dtt[c];
              h[n][c] = hn * dAt[n * W + c];  // dL/dx_{t-1} through the recurrence
            }
            gC_t[t * n_state + n] = sc;
            gB_t[t * n_state + n] = sb;
          }
          for (int c = 0; c < W; ++c) {
            gu_t[t * W + c] = gu_c[c];
            gdt_t[t * W + c] = gdt_c[c];
          }
        }
        store_tile<scalar_t, W>(gu + row0, g.len, t0, steps, p.lanes, gu_t);
        store_tile<scalar_t, W>(gdt + row0, g.len, t0, steps, p.lanes, gdt_t);
        if (z != nullptr) store_tile<scalar_t, W>(gz + row0, g.len, t0, steps, p.lanes, gz_t);
        // partial dB, dC of this block: (b, block, l, n), summed over the group's blocks by the caller
        scalar_t* gBp = gB_part + (item * g.len + t0) * n_state;
        scalar_t* gCp = gC_part + (item * g.len + t0) * n_state;
        std::copy(gB_t, gB_t + steps * n_state, gBp);
        std::copy(gC_t, gC_t + steps * n_state, gCp);
      }
      for (int c = 0; c < p.lanes; ++c) {
        for (int n = 0; n < n_state; ++n) gA_part[(p.b * g.dim + p.ch0 + c) * n_state + n] = gA[n][c];
        if (gD_part != nullptr) gD_part[p.b * g.dim + p.ch0 + c] = gD[c];
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// checks and entry points
// ---------------------------------------------------------------------------------------------------
Geometry geometry(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, int64_t lanes) {
  TORCH_CHECK(u.dim() == 3, "selective_scan_cpu: u must be (b, d, l), got ", u.sizes());
  TORCH_CHECK(dt.sizes() == u.sizes(), "selective_scan_cpu: delta must match u ", u.sizes(), ", got ",
              dt.sizes());
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "selective_scan_cpu: A must be (d, n), got ",
              A.sizes());
  TORCH_CHECK(B.dim() == 4 && B.size(0) == u.size(0) && B.size(2) == A.size(1) && B.size(3) == u.size(2),
              "selective_scan_cpu: B must be (b, g, n, l), got ", B.sizes());
  TORCH_CHECK(C.sizes() == B.sizes(), "selective_scan_cpu: C must match B ", B.sizes(), ", got ",
              C.sizes());
  TORCH_CHECK(A.size(1) <= kMaxState, "selective_scan_cpu: d_state must be <= ", kMaxState);
  TORCH_CHECK(u.size(1) % B.size(1) == 0, "selective_scan_cpu: d (", u.size(1),
              ") must be a multiple of the number of groups (", B.size(1), ")");
  for (const auto* t : {&u, &dt, &A, &B, &C}) {
    TORCH_CHECK(t->is_contiguous() && t->device().is_cpu() && t->scalar_type() == u.scalar_type(),
                "selective_scan_cpu: inputs must be contiguous CPU tensors of one dtype");
  }
  Geometry g;
  g.batch = u.size(0);
  g.dim = u.size(1);
  g.len = u.size(2);
  g.nstate = A.size(1);
  g.groups = B.size(1);
  g.dim_per_group = g.dim / g.groups;
  g.blocks_per_group = (g.dim_per_group + lanes - 1) / lanes;
  g.blocks = g.groups * g.blocks_per_group;
  g.chunks = (g.len + kChunk - 1) / kChunk;
  return g;
}

template <typename scalar_t>
const scalar_t* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

#define DISPATCH_STATE(NSTATE, KERNEL, ...)        \
  do {                                             \
    if ((NSTATE) == 16) {                          \
      KERNEL<scalar_t, 16>(__VA_ARGS__);           \
    } else if ((NSTATE) == 8) {                    \
      KERNEL<scalar_t, 8>(__VA_ARGS__);            \
    } else {                                       \
      KERNEL<scalar_t, 0>(__VA_ARGS__);            \
    }                                              \
  } while (0)

std::vector<at::Tensor> scan_forward(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& A,
                                     const at::Tensor& B, const at::Tensor& C,
                                     const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                                     bool save_checkpoints) {
  const int64_t lanes = u.scalar_type() == at::kDouble ? Lanes<double>::value : Lanes<float>::value;
  const Geometry g = geometry(u, dt, A, B, C, lanes);
  auto out = at::empty_like(u);
  auto ckpt = save_checkpoints ? at::empty({g.batch * g.blocks, g.chunks, g.nstate, lanes}, u.options())
                               : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_fwd", [&] {
    DISPATCH_STATE(g.nstate, forward_kernel, g, u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                   A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                   optional_ptr<scalar_t>(D), optional_ptr<scalar_t>(z), out.data_ptr<scalar_t>(),
                   save_checkpoints ? ckpt.data_ptr<scalar_t>() : nullptr);
  });
  return {out, ckpt};
}

std::vector<at::Tensor> scan_backward(const at::Tensor& u, const at::Tensor& dt, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C,
                                      const std::optional<at::Tensor>& D,
                                      const std::optional<at::Tensor>& z, const at::Tensor& ckpt,
                                      const at::Tensor& gout) {
  const int64_t lanes = u.scalar_type() == at::kDouble ? Lanes<double>::value : Lanes<float>::value;
  const Geometry g = geometry(u, dt, A, B, C, lanes);
  TORCH_CHECK(gout.sizes() == u.sizes() && gout.is_contiguous() && gout.scalar_type() == u.scalar_type(),
              "selective_scan_cpu: grad_out must be a contiguous tensor shaped like u");
  TORCH_CHECK(ckpt.numel() == g.batch * g.blocks * g.chunks * g.nstate * lanes,
              "selective_scan_cpu: checkpoints do not match the inputs");
  auto gu = at::empty_like(u);
  auto gdt = at::empty_like(u);
  auto gA_part = at::empty({g.batch, g.dim, g.nstate}, u.options());
  auto gB_part = at::empty({g.batch, g.blocks, g.len, g.nstate}, u.options());
  auto gC_part = at::empty({g.batch, g.blocks, g.len, g.nstate}, u.options());
  auto gD_part = D.has_value() ? at::empty({g.batch, g.dim}, u.options()) : at::empty({0}, u.options());
  auto gz = z.has_value() ? at::empty_like(u) : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_bwd", [&] {
    DISPATCH_STATE(g.nstate, backward_kernel, g, u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                   A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                   optional_ptr<scalar_t>(D), optional_ptr<scalar_t>(z), ckpt.data_ptr<scalar_t>(),
                   gout.data_ptr<scalar_t>(), gu.data_ptr<scalar_t>(), gdt.data_ptr<scalar_t>(),
                   gA_part.data_ptr<scalar_t>(), gB_part.data_ptr<scalar_t>(), gC_part.data_ptr<scalar_t>(),
                   D.has_value() ? gD_part.data_ptr<scalar_t>() : nullptr,
                   z.has_value() ? gz.data_ptr<scalar_t>() : nullptr);
  });
  return {gu, gdt, gA_part, gB_part, gC_part, gD_part, gz};
}

}  // namespace

TORCH_LIBRARY(clearmamba_scan, m) {
  m.def("forward", &scan_forward);
  m.def("backward", &scan_backward);
}
