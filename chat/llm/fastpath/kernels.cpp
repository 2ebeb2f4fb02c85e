// The fast decoder's C++ kernels (chat/llm/fastpath/kernels.py loads them): products with llama.cpp's block-quantized
// weights, and the attention of a batch of sequences over their KV cache slots.
//
// A matrix (N, K) is stored in blocks of 32 consecutive columns of a row, each block with its own fp32 scale:
//   Q4_1 (the transformer layers): 16 bytes of 4-bit codes q in 0..15, byte j = q[j] | q[j + 16] << 4, and a min;
//                                  w = scale * q + min.
//   Q8_0 (the embedding / lm_head): 32 signed bytes q in -127..127; w = scale * q.
// Each input row x is rounded to int16 with one scale for the row (x ~ xscale * xq, error < 1/65534 of the row's
// largest |x|), so a block's dot product is integer arithmetic: AVX2's vpmaddwd multiplies 16 pairs of 16-bit values
// and adds neighbours into 8 int32 lanes. Per block: load, widen, mask / shift, two vpmaddwd, add, convert, one fused
// multiply-add with the weights' scale; xscale multiplies the row's total once, and the Q4_1 min adds
// min * sum(x over the block) (exact fp32 sums, one dot per row). One scale per row rather than per block of x (as
// llama.cpp's int8 q8_1) saves a multiply and a load per block and row; what the rounding costs in accuracy is
// measured by `python -m chat.bench rounding` (docs/fast-decoding.md).
//
// A batch of R input rows (the decode step of R sequences, or a prompt's chunk) reads and unpacks each weight block
// once for a tile of up to 8 rows, which then cost only their two vpmaddwd and the scaling each: at 8 rows the
// product runs several times more weights per second than one row at a time. Every row's arithmetic is the same sequence of
// operations whatever the tile it sits in, so a sequence's result is bit for bit the same alone or in any batch.
// One row alone (a single user decoding) takes a plain loop over the weight rows with those same operations: the
// tiles' padded layout and vector bookkeeping would slow a lone row down.
// Weight rows are split across OpenMP threads (torch's own pool: the library is built with -fopenmp like inductor's
// code), handed out in ~64 grabs as the threads ask rather than in two fixed halves: in the app, Gradio's threads run
// on the same two cores, and with fixed halves each preemption of one thread makes the other wait for it at the end
// of the product.
#include <ATen/core/Tensor.h>  // only the ATen headers the ops use: ATen.h alone nearly doubles the compile time
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define CHATLAB_AVX2 1
#endif

namespace {

constexpr int64_t kBlock = 32;
constexpr int kLanes = 8;  // rows of x per tile: one AVX2 register of their per-block sums or results

// The input rows quantized: codes int16 and per block its exact sum, stored block-major with the rows padded to a
// multiple of 8 ((blocks, rows, 32) codes, (blocks, rows) sums), so a tile of rows finds its block's values side by
// side at fixed offsets (no address arithmetic per row) and one load gives a tile's 8 sums; and each row's scale.
struct QuantizedRows {
  int64_t rows = 0, padded = 0, blocks = 0;
  at::Tensor buffer;  // codes, sums, scales; ATen's allocator aligns it to 64 bytes (whole cache lines per block)
  int16_t* codes = nullptr;
  float* scales = nullptr;
  float* sums = nullptr;

  const int16_t* block_codes(int64_t b, int64_t first) const { return codes + (b * padded + first) * kBlock; }
  const float* block_sums(int64_t b, int64_t first) const { return sums + b * padded + first; }
};

// The rows' buffer (one allocation: a decode step makes 121 products); one row alone (a single sequence decoding) is
// stored unpadded, and padding rows read as zeros.
QuantizedRows allocate_rows(int64_t rows, int64_t k) {
  QuantizedRows q;
  q.rows = rows;
  q.blocks = k / kBlock;
  q.padded = rows == 1 ? 1 : (rows + kLanes - 1) / kLanes * kLanes;
  const int64_t codes = q.blocks * q.padded * kBlock * 2, sums = q.blocks * q.padded * 4;
  const int64_t size = codes + sums + q.padded * 4;
  q.buffer = q.padded == rows ? at::empty({size}, at::kByte) : at::zeros({size}, at::kByte);
  uint8_t* start = q.buffer.data_ptr<uint8_t>();
  q.codes = reinterpret_cast<int16_t*>(start);
  q.sums = reinterpret_cast<float*>(start + codes);
  q.scales = reinterpret_cast<float*>(start + codes + sums);
  return q;
}

// The largest |x| of a row (exact whatever the order, so the same alone or in a batch).
inline float row_amax(const float* x, int64_t k) {
#ifdef CHATLAB_AVX2
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 top = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) top = _mm256_max_ps(top, _mm256_and_ps(_mm256_loadu_ps(x + i), magnitude));
  __m128 t = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
  t = _mm_max_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_max_ss(t, _mm_movehdup_ps(t)));
#else
  float amax = 0.f;
  for (int64_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
#endif
}

// One block of 32 values of a row whose codes are x / scale: codes[i] = round(x[i] * inverse) (to nearest even, as
// lrintf), and the exact sum of the values. The AVX2 and scalar versions give the same codes and sum bit for bit.
inline void quantize_block(const float* xb, float inverse, int16_t* codes, float* sum_out) {
#ifdef CHATLAB_AVX2
  __m256 v[4];
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
  const __m256 sums = _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(sums), _mm256_extractf128_ps(sums, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  const float sum = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  const __m256 inv = _mm256_set1_ps(inverse);
  for (int i = 0; i < 4; i += 2) {  // cvtps rounds to nearest even; packs keeps 128-bit lanes, permute restores order
    const __m256i packed = _mm256_packs_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv)),
                                              _mm256_cvtps_epi32(_mm256_mul_ps(v[i + 1], inv)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 8 * i), _mm256_permute4x64_epi64(packed, 0xD8));
  }
#else
  float lanes[8];
  for (int i = 0; i < 8; ++i) lanes[i] = (xb[i] + xb[8 + i]) + (xb[16 + i] + xb[24 + i]);  // the vector version's order
  const float sum = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
  for (int64_t i = 0; i < kBlock; ++i) codes[i] = static_cast<int16_t>(std::lrintf(xb[i] * inverse));
#endif
  *sum_out = sum;
}

// Quantize x's rows into q, the (row, block) pairs shared by the threads of the enclosing parallel region (a value
// is the same whichever thread computes it); the loop's barrier leaves every block ready for the product. A thread
// finds the scale of each row it meets itself (a scan of one row) rather than waiting at a second barrier for a loop
// of scales: in the app a barrier is where a preempted thread holds the other.
void quantize_rows(const float* x, const QuantizedRows& q) {
  const int64_t k = q.blocks * kBlock;
  int64_t row = -1;
  float scale = 0.f, inverse = 0.f;
#pragma omp for schedule(static)
  for (int64_t item = 0; item < q.rows * q.blocks; ++item) {
    const int64_t r = item / q.blocks, b = item % q.blocks, at = b * q.padded + r;
    if (r != row) {
      row = r;
      scale = row_amax(x + r * k, k) / 32767.f;
      inverse = scale > 0.f ? 1.f / scale : 0.f;
    }
    if (b == 0) q.scales[r] = scale;
    quantize_block(x + r * k + b * kBlock, inverse, q.codes + at * kBlock, q.sums + at);
  }
}

// Weight rows (or chunks of them) are handed to the threads as they ask, ~64 grabs a product: a thread that the
// system preempts (the app's other threads share the cores) leaves its share to the other instead of making it wait.
inline int64_t grab_size(int64_t items) { return std::max<int64_t>(1, items / 64); }

#ifdef CHATLAB_AVX2
inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// W weight rows against T rows of x (first .. first + T - 1): out[t * n_out + w]. Each weight block is loaded and
// unpacked once for the T rows; the W x T accumulators are independent chains, so one row alone still keeps the
// multipliers busy (W = 4). Every (weight row, x row) pair is the same sequence of operations whatever W and T are.
template <bool Q4, int W, int T>
inline void tile(const uint8_t* codes, const float* scales, const float* mins, int64_t blocks, const QuantizedRows& x,
                 int64_t first, float* out, int64_t n_out) {
  constexpr int64_t bytes = Q4 ? 16 : 32;
  __m256 acc[W][T];
  __m256 offset[W];  // Q4_1: min * sum(x) over the blocks, one lane per x row
  for (int w = 0; w < W; ++w) {
    offset[w] = _mm256_setzero_ps();
    for (int t = 0; t < T; ++t) acc[w][t] = _mm256_setzero_ps();
  }
  const __m256i low_nibble = _mm256_set1_epi16(0x0F);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int w = 0; w < W; ++w) {
      const uint8_t* c = codes + (w * blocks + b) * bytes;
      // Tiles of fewer than 8 rows do too little per block to hide the wait for the codes from memory: they fetch
      // them 1 KB ahead (8-row tiles gain nothing from it).
      if constexpr (T < kLanes) _mm_prefetch(reinterpret_cast<const char*>(c) + 1024, _MM_HINT_T0);
      __m256i first_half, second_half;  // the block's 32 codes as int16: columns 0..15 and 16..31
      if constexpr (Q4) {
        const __m256i packed = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
        first_half = _mm256_and_si256(packed, low_nibble);
        second_half = _mm256_srli_epi16(packed, 4);
      } else {
        first_half = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
        second_half = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16)));
      }
      const __m256 scale = _mm256_broadcast_ss(scales + w * blocks + b);
      const int16_t* xq = x.block_codes(b, first);
      for (int t = 0; t < T; ++t) {
        const __m256i dot = _mm256_add_epi32(
            _mm256_madd_epi16(first_half, _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + t * kBlock))),
            _mm256_madd_epi16(second_half,
                              _mm256_load_si256(reinterpret_cast<const __m256i*>(xq + t * kBlock + 16))));
        acc[w][t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc[w][t]);
      }
      if constexpr (Q4) {
        offset[w] = _mm256_fmadd_ps(_mm256_broadcast_ss(mins + w * blocks + b),
                                    _mm256_loadu_ps(x.block_sums(b, first)), offset[w]);
      }
    }
  }
  for (int w = 0; w < W; ++w) {
    alignas(32) float lanes[kLanes];
    _mm256_store_ps(lanes, offset[w]);
    for (int t = 0; t < T; ++t) out[t * n_out + w] = std::fma(horizontal_sum(acc[w][t]), x.scales[first + t], lanes[t]);
  }
}
#else
template <bool Q4, int W, int T>
inline void tile(const uint8_t* codes, const float* scales, const float* mins, int64_t blocks, const QuantizedRows& x,
                 int64_t first, float* out, int64_t n_out) {
  constexpr int64_t bytes = Q4 ? 16 : 32;
  for (int w = 0; w < W; ++w) {
    for (int t = 0; t < T; ++t) {
      float value = 0.f, offset = 0.f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* c = codes + (w * blocks + b) * bytes;
        const int16_t* xq = x.block_codes(b, first + t);
        int32_t dot = 0;
        for (int j = 0; j < 16; ++j) {
          if constexpr (Q4) {
            dot += static_cast<int32_t>(c[j] & 0x0F) * xq[j] + static_cast<int32_t>(c[j] >> 4) * xq[j + 16];
          } else {
            dot += static_cast<int32_t>(static_cast<int8_t>(c[j])) * xq[j] +
                   static_cast<int32_t>(static_cast<int8_t>(c[j + 16])) * xq[j + 16];
          }
        }
        value = std::fma(scales[w * blocks + b], static_cast<float>(dot), value);
        if constexpr (Q4) offset = std::fma(mins[w * blocks + b], *x.block_sums(b, first + t), offset);
      }
      out[t * n_out + w] = std::fma(value, x.scales[first + t], offset);
    }
  }
}
#endif

// A tile's shape for its count of x rows: 4 weight rows for one x row, 2 for two, one from three up. Wider tiles
// (2 weight rows x 4 x rows, 4 x 2) do not fit the 16 vector registers: their accumulators spill to the stack.
// The Q8_0 matrix (the lm_head: 28 MB) is read from memory at its bandwidth, one row after the other.
template <bool Q4, int T>
inline int64_t tile_rows(int64_t n_left, const uint8_t* codes, const float* scales, const float* mins,
                         int64_t blocks, const QuantizedRows& x, int64_t first, float* out, int64_t n_out) {
  constexpr int W = !Q4 ? 1 : T == 1 ? 4 : T == 2 ? 2 : 1;
  if (n_left >= W) {
    tile<Q4, W, T>(codes, scales, mins, blocks, x, first, out, n_out);
    return W;
  }
  tile<Q4, 1, T>(codes, scales, mins, blocks, x, first, out, n_out);
  return 1;
}

template <bool Q4>
int64_t any_tile(int64_t count, int64_t n_left, const uint8_t* codes, const float* scales, const float* mins,
                 int64_t blocks, const QuantizedRows& x, int64_t first, float* out, int64_t n_out) {
  switch (count) {
    case 1: return tile_rows<Q4, 1>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    case 2: return tile_rows<Q4, 2>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    case 3: return tile_rows<Q4, 3>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    case 4: return tile_rows<Q4, 4>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    case 5: return tile_rows<Q4, 5>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    case 6: return tile_rows<Q4, 6>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    case 7: return tile_rows<Q4, 7>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
    default: return tile_rows<Q4, kLanes>(n_left, codes, scales, mins, blocks, x, first, out, n_out);
  }
}

void check(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, int64_t bytes_per_block) {
  TORCH_CHECK((x.dim() == 1 || x.dim() == 2) && x.scalar_type() == at::kFloat,
              "x must be a float32 vector (K,) or a batch of rows (R, K)");
  TORCH_CHECK(codes.dim() == 3 && codes.size(2) == bytes_per_block && codes.is_contiguous(),
              "codes must be contiguous (N, K/32, ", bytes_per_block, ")");
  TORCH_CHECK(x.size(-1) == codes.size(1) * kBlock, "x has ", x.size(-1), " values, the matrix ",
              codes.size(1) * kBlock, " columns");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() &&
                  scales.numel() == codes.size(0) * codes.size(1),
              "scales must be contiguous float32 (N, K/32)");
}

// One x row (a single sequence decoding): each weight row's dot product in turn, one chain of fused multiply-adds
// per row. The same operations, in the same order, as that row's lane of a tile: the results are bit for bit those
// of the batched path.
template <bool Q4>
inline float row_dot(const uint8_t* c, const float* s, const float* m, const int16_t* xq, float xs,
                     const float* xsum, int64_t blocks) {
#ifdef CHATLAB_AVX2
  __m256 acc = _mm256_setzero_ps();
  float offset = 0.f;
  const __m256i low_nibble = _mm256_set1_epi16(0x0F);
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i first_half, second_half;
    if constexpr (Q4) {
      const __m256i packed = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + b * 16)));
      first_half = _mm256_and_si256(packed, low_nibble);
      second_half = _mm256_srli_epi16(packed, 4);
    } else {
      first_half = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + b * 32)));
      second_half = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + b * 32 + 16)));
    }
    const __m256i dot = _mm256_add_epi32(
        _mm256_madd_epi16(first_half, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kBlock))),
        _mm256_madd_epi16(second_half, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kBlock + 16))));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(s[b]), _mm256_cvtepi32_ps(dot), acc);
    if constexpr (Q4) offset = std::fma(m[b], xsum[b], offset);
  }
  return std::fma(horizontal_sum(acc), xs, offset);
#else
  float value = 0.f, offset = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    int32_t dot = 0;
    for (int j = 0; j < 16; ++j) {
      if constexpr (Q4) {
        dot += static_cast<int32_t>(c[b * 16 + j] & 0x0F) * xq[b * kBlock + j] +
               static_cast<int32_t>(c[b * 16 + j] >> 4) * xq[b * kBlock + j + 16];
      } else {
        dot += static_cast<int32_t>(static_cast<int8_t>(c[b * 32 + j])) * xq[b * kBlock + j] +
               static_cast<int32_t>(static_cast<int8_t>(c[b * 32 + j + 16])) * xq[b * kBlock + j + 16];
      }
    }
    value = std::fma(s[b], static_cast<float>(dot), value);
    if constexpr (Q4) offset = std::fma(m[b], xsum[b], offset);
  }
  return std::fma(value, xs, offset);
#endif
}

template <bool Q4>
at::Tensor product_one(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, const float* mins) {
  const int64_t n = codes.size(0), blocks = codes.size(1), bytes = Q4 ? 16 : 32;
  const QuantizedRows q = allocate_rows(1, x.size(-1));
  at::Tensor out = x.dim() == 1 ? at::empty({n}, x.options()) : at::empty({1, n}, x.options());
  float* o = out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const uint8_t* c = reinterpret_cast<const uint8_t*>(codes.data_ptr());
  const float* s = scales.data_ptr<float>();
  const int64_t grab = std::max<int64_t>(16, grab_size(n));
#pragma omp parallel
  {
    quantize_rows(xp, q);
#pragma omp for schedule(dynamic, grab)
    for (int64_t row = 0; row < n; ++row) {
      o[row] = row_dot<Q4>(c + row * blocks * bytes, s + row * blocks, Q4 ? mins + row * blocks : nullptr, q.codes,
                           q.scales[0], q.sums, blocks);
    }
  }
  return out;
}

constexpr int64_t kChunk = 16;  // weight rows per thread task: their blocks stay in L1 while every x tile passes

// x (K,) -> (N,) or x (R, K) -> (R, N): weight rows split across threads in chunks; in a chunk, each tile of up to
// 8 x rows meets each weight row once
template <bool Q4>
at::Tensor product(const at::Tensor& x_in, const at::Tensor& codes, const at::Tensor& scales, const float* mins) {
  const at::Tensor x = x_in.contiguous();
  const int64_t rows = x.dim() == 1 ? 1 : x.size(0), n = codes.size(0), blocks = codes.size(1);
  if (rows == 1) return product_one<Q4>(x, codes, scales, mins);
  const QuantizedRows q = allocate_rows(rows, x.size(-1));
  at::Tensor out = x.dim() == 1 ? at::empty({n}, x.options()) : at::empty({rows, n}, x.options());
  float* o = out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const uint8_t* c = reinterpret_cast<const uint8_t*>(codes.data_ptr());
  const float* s = scales.data_ptr<float>();
  const int64_t bytes = Q4 ? 16 : 32, chunks = (n + kChunk - 1) / kChunk, grab = grab_size(chunks);
#pragma omp parallel
  {
    quantize_rows(xp, q);
#pragma omp for schedule(dynamic, grab)
    for (int64_t index = 0; index < chunks; ++index) {
      const int64_t chunk = index * kChunk, end = std::min(n, chunk + kChunk);
      for (int64_t first = 0; first < rows; first += kLanes) {
        const int64_t count = std::min<int64_t>(kLanes, rows - first);
        for (int64_t row = chunk; row < end;) {
          row += any_tile<Q4>(count, end - row, c + row * blocks * bytes, s + row * blocks,
                              Q4 ? mins + row * blocks : nullptr, blocks, q, first, o + first * n + row, n);
        }
      }
    }
  }
  return out;
}

at::Tensor q4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins) {
  check(x, codes, scales, 16);
  TORCH_CHECK(codes.scalar_type() == at::kByte, "Q4_1 codes must be uint8");
  TORCH_CHECK(mins.scalar_type() == at::kFloat && mins.is_contiguous() && mins.numel() == scales.numel(),
              "mins must be contiguous float32 (N, K/32)");
  return product<true>(x, codes, scales, mins.data_ptr<float>());
}

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  check(x, codes, scales, kBlock);
  TORCH_CHECK(codes.scalar_type() == at::kChar, "Q8_0 codes must be int8");
  return product<false>(x, codes, scales, nullptr);
}

// --- attention over the KV cache slots --------------------------------------------------------------------------
//
// Row r of a step is token positions[r] of the sequence in cache slot slots[r]. The rows of one slot are consecutive
// and so are their positions (a decode step has one row per sequence; a prompt chunk several). The cache holds each
// slot's keys and values for the positions before that slot's first row in this step; the step's own keys and
// values (k_new, v_new) come in separately (the caller stores them in the cache after the step). So row r attends to
// cache[slot, :p0] followed by the new keys of its slot's rows up to itself: causal, and per sequence.

#ifdef CHATLAB_AVX2
// e^x for x <= 0 (softmax after subtracting the max), ~1 ulp: 2^n * p(r), r = x - n ln 2, Cephes' polynomial
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
}
#endif

inline float dot(const float* a, const float* b, int64_t n) {
#ifdef CHATLAB_AVX2
  if (n % 8 == 0) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return horizontal_sum(acc);
  }
#endif
  float total = 0.f;
  for (int64_t i = 0; i < n; ++i) total = std::fma(a[i], b[i], total);
  return total;
}

// scores[j] <- softmax(scores)[j]
void softmax(float* scores, int64_t n) {
  float top = -INFINITY;
  for (int64_t j = 0; j < n; ++j) top = std::max(top, scores[j]);
  int64_t j = 0;
  float total = 0.f;
#ifdef CHATLAB_AVX2
  __m256 sums = _mm256_setzero_ps();
  const __m256 shift = _mm256_set1_ps(top);
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), shift));
    _mm256_storeu_ps(scores + j, e);
    sums = _mm256_add_ps(sums, e);
  }
  total = horizontal_sum(sums);
#endif
  for (; j < n; ++j) {
    scores[j] = std::exp(scores[j] - top);
    total += scores[j];
  }
  const float inverse = 1.f / total;
  for (int64_t i = 0; i < n; ++i) scores[i] *= inverse;
}

// The keys (or values) one row attends to: its sequence's cached positions, then the step's new rows of that
// sequence up to itself.
struct Positions {
  const float* cached;  // (n_cached, hd) contiguous
  int64_t n_cached;
  const float* fresh;  // the new rows', `stride` floats apart
  int64_t stride;
  int64_t n;  // all of them

  const float* operator[](int64_t j) const { return j < n_cached ? cached + j * hd_ : fresh + (j - n_cached) * stride; }
  int64_t hd_;
};

// scores[j] = q . key_j for every position (q already scaled by 1/sqrt(hd)). Eight keys at a time: eight
// independent chains of fused multiply-adds, then one transposing reduction, instead of a latency-bound chain and a
// horizontal sum per key.
void head_scores(const float* q, const Positions& keys, int64_t hd, float* scores) {
  int64_t j = 0;
#ifdef CHATLAB_AVX2
  if (hd % 8 == 0) {
    for (; j + 8 <= keys.n; j += 8) {
      const float* k[8];
      __m256 acc[8];
      for (int i = 0; i < 8; ++i) {
        k[i] = keys[j + i];
        acc[i] = _mm256_setzero_ps();
      }
      for (int64_t d = 0; d < hd; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[i] + d), acc[i]);
      }
      const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
      const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
      _mm256_storeu_ps(scores + j, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                                 _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
  }
#endif
  for (; j < keys.n; ++j) scores[j] = dot(q, keys[j], hd);
}

// out[d] = sum_j weights[j] * value_j[d]
void weighted_values(const float* weights, const Positions& values, int64_t hd, float* out) {
  int64_t d0 = 0;
#ifdef CHATLAB_AVX2
  for (; d0 + 64 <= hd; d0 += 64) {  // 8 registers of accumulators, one chain each
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t j = 0; j < values.n; ++j) {
      const __m256 w = _mm256_broadcast_ss(weights + j);
      const float* v = values[j] + d0;
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * i), acc[i]);
    }
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + d0 + 8 * i, acc[i]);
  }
#endif
  for (int64_t d = d0; d < hd; ++d) {
    float total = 0.f;
    for (int64_t j = 0; j < values.n; ++j) total = std::fma(weights[j], values[j][d], total);
    out[d] = total;
  }
}

// q (R, heads * hd), k_new / v_new (R, kv_heads * hd), k_cache / v_cache (slots, layers, kv_heads, T, hd),
// slots / positions (R,) int64 -> (R, heads * hd)
at::Tensor attention(const at::Tensor& q_in, const at::Tensor& k_new_in, const at::Tensor& v_new_in,
                     const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& slots_in,
                     const at::Tensor& positions_in, int64_t layer, int64_t heads) {
  const at::Tensor q = q_in.contiguous(), k_new = k_new_in.contiguous(), v_new = v_new_in.contiguous();
  const at::Tensor slots = slots_in.contiguous(), positions = positions_in.contiguous();
  TORCH_CHECK(k_cache.dim() == 5 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() && k_cache.scalar_type() == at::kFloat,
              "the caches must be contiguous float32 (slots, layers, kv_heads, T, head_dim)");
  const int64_t rows = q.size(0), kv_heads = k_cache.size(2), context = k_cache.size(3), hd = k_cache.size(4);
  TORCH_CHECK(q.dim() == 2 && q.size(1) == heads * hd && heads % kv_heads == 0, "q must be (rows, heads * head_dim)");
  TORCH_CHECK(k_new.size(0) == rows && k_new.numel() == rows * kv_heads * hd && v_new.sizes() == k_new.sizes(),
              "k_new / v_new must be (rows, kv_heads * head_dim)");
  TORCH_CHECK(slots.numel() == rows && positions.numel() == rows && slots.scalar_type() == at::kLong &&
                  positions.scalar_type() == at::kLong,
              "slots and positions must be int64 (rows,)");
  TORCH_CHECK(0 <= layer && layer < k_cache.size(1), "layer out of range");
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  std::vector<int64_t> run_start(rows);  // first row of each row's slot in this step
  int64_t longest = 0;
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(0 <= slot[r] && slot[r] < k_cache.size(0), "slot ", slot[r], " out of range");
    TORCH_CHECK(0 <= pos[r] && pos[r] < context, "position ", pos[r], " outside the cache's ", context);
    const bool continues = r > 0 && slot[r - 1] == slot[r];
    TORCH_CHECK(!continues || pos[r] == pos[r - 1] + 1, "a slot's rows must have consecutive positions");
    run_start[r] = continues ? run_start[r - 1] : r;
    longest = std::max(longest, pos[r] + 1);
  }
  at::Tensor out = at::empty({rows, heads * hd}, q.options());
  const float* qp = q.data_ptr<float>();
  const float* kn = k_new.data_ptr<float>();
  const float* vn = v_new.data_ptr<float>();
  const float* kc = k_cache.data_ptr<float>();
  const float* vc = v_cache.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t group = heads / kv_heads;
  const float scale = 1.f / std::sqrt(static_cast<float>(hd));
  const int64_t head_stride = context * hd, slot_stride = k_cache.size(1) * kv_heads * head_stride;
  // Tasks are handed out as the threads ask (rows attend over different lengths, and a preempted thread leaves its
  // share to the other). With several rows a task is a row's group of query heads that share one key / value head
  // (3 for SmolLM2): the group's later heads find the keys and values in the core's cache instead of memory. One row
  // alone keeps a task per query head, nine, so both threads have work. A head's arithmetic is the same either way.
  const int64_t per_task = rows > 1 ? group : 1;
#pragma omp parallel
  {
    std::vector<float> weights(longest), query(hd);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < rows * heads / per_task; ++item) {
      const int64_t r = item * per_task / heads, first_head = item * per_task % heads, kvh = first_head / group;
      const int64_t first = run_start[r], cached = pos[first], n = pos[r] + 1;
      const int64_t base = slot[r] * slot_stride + (layer * kv_heads + kvh) * head_stride;
      const int64_t fresh_at = first * kv_heads * hd + kvh * hd, stride = kv_heads * hd;
      const Positions keys{kc + base, cached, kn + fresh_at, stride, n, hd};
      const Positions values{vc + base, cached, vn + fresh_at, stride, n, hd};
      for (int64_t h = first_head; h < first_head + per_task; ++h) {
        for (int64_t d = 0; d < hd; ++d) query[d] = qp[(r * heads + h) * hd + d] * scale;
        head_scores(query.data(), keys, hd, weights.data());
        softmax(weights.data(), n);
        weighted_values(weights.data(), values, hd, op + (r * heads + h) * hd);
      }
    }
  }
  return out;
}

// k_cache / v_cache[slots[r], :, :, positions[r]] = k / v[r] for the rows' (R, layers, kv_heads, hd) keys and values
void store(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& slots_in, const at::Tensor& positions_in,
           const at::Tensor& k_in, const at::Tensor& v_in) {
  const at::Tensor slots = slots_in.contiguous(), positions = positions_in.contiguous();
  const at::Tensor k = k_in.contiguous(), v = v_in.contiguous();
  TORCH_CHECK(k_cache.dim() == 5 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() && k_cache.scalar_type() == at::kFloat,
              "the caches must be contiguous float32 (slots, layers, kv_heads, T, head_dim)");
  const int64_t rows = slots.numel(), lanes = k_cache.size(1) * k_cache.size(2), context = k_cache.size(3),
                hd = k_cache.size(4);
  TORCH_CHECK(k.numel() == rows * lanes * hd && v.sizes() == k.sizes() && k.scalar_type() == at::kFloat,
              "k / v must be float32 (rows, layers, kv_heads, head_dim)");
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(0 <= slot[r] && slot[r] < k_cache.size(0) && 0 <= pos[r] && pos[r] < context,
                "slot or position out of range");
  }
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* kcp = k_cache.data_ptr<float>();
  float* vcp = v_cache.data_ptr<float>();
  // each copy lands in its own page of the cache (first writes fault a page in): both threads share them
#pragma omp parallel for schedule(static) if (rows * lanes >= 64)
  for (int64_t item = 0; item < rows * lanes; ++item) {
    const int64_t r = item / lanes, lane = item % lanes, at = ((slot[r] * lanes + lane) * context + pos[r]) * hd;
    std::copy_n(kp + item * hd, hd, kcp + at);
    std::copy_n(vp + item * hd, hd, vcp + at);
  }
}

}  // namespace

TORCH_LIBRARY(chatlab, m) {
  m.def("q4_linear(Tensor x, Tensor codes, Tensor scales, Tensor mins) -> Tensor");
  m.def("q8_linear(Tensor x, Tensor codes, Tensor scales) -> Tensor");
  m.def("attention(Tensor q, Tensor k_new, Tensor v_new, Tensor k_cache, Tensor v_cache, Tensor slots, "
        "Tensor positions, int layer, int heads) -> Tensor");
  m.def("store(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slots, Tensor positions, Tensor k, Tensor v) -> ()");
}

TORCH_LIBRARY_IMPL(chatlab, CPU, m) {
  m.impl("q4_linear", &q4_linear);
  m.impl("q8_linear", &q8_linear);
  m.impl("attention", &attention);
  m.impl("store", &store);
}
