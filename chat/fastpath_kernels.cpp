// Matrix-vector products on llama.cpp's block-quantized weights, for the fast decoder (chat/fastpath.py).
//
// A matrix (N, K) is stored in blocks of 32 consecutive columns of a row, each block with its own fp32 scale:
//   Q4_1 (the transformer layers): 16 bytes of 4-bit codes q in 0..15, byte j = q[j] | q[j + 16] << 4, and a min;
//                                  w = scale * q + min.
//   Q8_0 (the embedding / lm_head): 32 signed bytes q in -127..127; w = scale * q.
// The input vector x is quantized per block of 32 to int16 (x ~ xscale * xq, error < 1/65534 of the block's
// largest |x|), so a block's dot product is integer arithmetic: AVX2's vpmaddwd multiplies 16 pairs of 16-bit
// values and adds neighbours into 8 int32 lanes. Per block: load, widen, mask / shift, two vpmaddwd, add, convert,
// one fused multiply-add with scale * xscale; the Q4_1 min adds min * sum(x over the block) (exact fp32 sum).
// llama.cpp does the same with int8 x (vpmaddubsw); int16 keeps the result within ~1e-5 of fp32.
// Rows are split across OpenMP threads (torch's own pool: the library is built with -fopenmp like inductor's code).
#include <ATen/ATen.h>
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

struct QuantizedX {
  std::vector<int16_t> codes;  // (K,)
  std::vector<float> scales;   // (K/32,)
  std::vector<float> sums;     // (K/32,) exact sum of x over the block
};

QuantizedX quantize_x(const float* x, int64_t k) {
  const int64_t blocks = k / kBlock;
  QuantizedX q{std::vector<int16_t>(k), std::vector<float>(blocks), std::vector<float>(blocks)};
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * kBlock;
    float amax = 0.f, sum = 0.f;
    for (int64_t i = 0; i < kBlock; ++i) {
      amax = std::max(amax, std::fabs(xb[i]));
      sum += xb[i];
    }
    const float scale = amax / 32767.f;
    const float inverse = scale > 0.f ? 1.f / scale : 0.f;
    for (int64_t i = 0; i < kBlock; ++i) {
      q.codes[b * kBlock + i] = static_cast<int16_t>(std::lrintf(xb[i] * inverse));
    }
    q.scales[b] = scale;
    q.sums[b] = sum;
  }
  return q;
}

// sum over the block of q[j] * xq[j], for 16 packed bytes of Q4_1 codes
inline int32_t q4_block_scalar(const uint8_t* codes, const int16_t* xq) {
  int32_t dot = 0;
  for (int j = 0; j < 16; ++j) {
    dot += static_cast<int32_t>(codes[j] & 0x0F) * xq[j] + static_cast<int32_t>(codes[j] >> 4) * xq[j + 16];
  }
  return dot;
}

inline int32_t q8_block_scalar(const int8_t* codes, const int16_t* xq) {
  int32_t dot = 0;
  for (int j = 0; j < 32; ++j) dot += static_cast<int32_t>(codes[j]) * xq[j];
  return dot;
}

#ifdef CHATLAB_AVX2
inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

float q4_row(const uint8_t* codes, const float* scales, const float* mins, const QuantizedX& x, int64_t blocks) {
  float offset = 0.f;
#ifdef CHATLAB_AVX2
  __m256 acc = _mm256_setzero_ps();
  const __m256i low_nibble = _mm256_set1_epi16(0x0F);
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i bytes = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b * 16)));
    const __m256i low = _mm256_and_si256(bytes, low_nibble);  // codes 0..15 of the block
    const __m256i high = _mm256_srli_epi16(bytes, 4);         // codes 16..31
    const int16_t* xq = x.codes.data() + b * kBlock;
    const __m256i dot = _mm256_add_epi32(
        _mm256_madd_epi16(low, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
        _mm256_madd_epi16(high, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 16))));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[b] * x.scales[b]), _mm256_cvtepi32_ps(dot), acc);
    offset += mins[b] * x.sums[b];
  }
  return horizontal_sum(acc) + offset;
#else
  float total = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    total += scales[b] * x.scales[b] * static_cast<float>(q4_block_scalar(codes + b * 16, x.codes.data() + b * kBlock));
    offset += mins[b] * x.sums[b];
  }
  return total + offset;
#endif
}

float q8_row(const int8_t* codes, const float* scales, const QuantizedX& x, int64_t blocks) {
#ifdef CHATLAB_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const int8_t* c = codes + b * kBlock;
    const int16_t* xq = x.codes.data() + b * kBlock;
    const __m256i first = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
    const __m256i second = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16)));
    const __m256i dot = _mm256_add_epi32(
        _mm256_madd_epi16(first, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq))),
        _mm256_madd_epi16(second, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 16))));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[b] * x.scales[b]), _mm256_cvtepi32_ps(dot), acc);
  }
  return horizontal_sum(acc);
#else
  float total = 0.f;
  for (int64_t b = 0; b < blocks; ++b) {
    total += scales[b] * x.scales[b] * static_cast<float>(q8_block_scalar(codes + b * kBlock, x.codes.data() + b * kBlock));
  }
  return total;
#endif
}

void check(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, int64_t bytes_per_block) {
  TORCH_CHECK(x.dim() == 1 && x.scalar_type() == at::kFloat, "x must be a 1-D float32 tensor");
  TORCH_CHECK(codes.dim() == 3 && codes.size(2) == bytes_per_block && codes.is_contiguous(),
              "codes must be contiguous (N, K/32, ", bytes_per_block, ")");
  TORCH_CHECK(x.size(0) == codes.size(1) * kBlock, "x has ", x.size(0), " values, the matrix ", codes.size(1) * kBlock,
              " columns");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.numel() == codes.size(0) * codes.size(1),
              "scales must be contiguous float32 (N, K/32)");
}

// out[row] = row_dot(row, x) for every row of the matrix, rows split across the OpenMP threads
template <typename RowDot>
at::Tensor matvec(const at::Tensor& x, int64_t rows, RowDot row_dot) {
  const QuantizedX q = quantize_x(x.data_ptr<float>(), x.size(0));
  at::Tensor out = at::empty({rows}, x.options());
  float* o = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) o[row] = row_dot(row, q);
  return out;
}

at::Tensor q4_linear(const at::Tensor& x_in, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins) {
  const at::Tensor x = x_in.contiguous();
  check(x, codes, scales, 16);
  TORCH_CHECK(codes.scalar_type() == at::kByte, "Q4_1 codes must be uint8");
  TORCH_CHECK(mins.scalar_type() == at::kFloat && mins.is_contiguous() && mins.numel() == scales.numel(),
              "mins must be contiguous float32 (N, K/32)");
  const int64_t blocks = codes.size(1);
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float* s = scales.data_ptr<float>();
  const float* m = mins.data_ptr<float>();
  return matvec(x, codes.size(0), [&](int64_t row, const QuantizedX& q) {
    return q4_row(c + row * blocks * 16, s + row * blocks, m + row * blocks, q, blocks);
  });
}

at::Tensor q8_linear(const at::Tensor& x_in, const at::Tensor& codes, const at::Tensor& scales) {
  const at::Tensor x = x_in.contiguous();
  check(x, codes, scales, kBlock);
  TORCH_CHECK(codes.scalar_type() == at::kChar, "Q8_0 codes must be int8");
  const int64_t blocks = codes.size(1);
  const int8_t* c = codes.data_ptr<int8_t>();
  const float* s = scales.data_ptr<float>();
  return matvec(x, codes.size(0), [&](int64_t row, const QuantizedX& q) {
    return q8_row(c + row * blocks * kBlock, s + row * blocks, q, blocks);
  });
}

}  // namespace

TORCH_LIBRARY(chatlab, m) {
  m.def("q4_linear(Tensor x, Tensor codes, Tensor scales, Tensor mins) -> Tensor");
  m.def("q8_linear(Tensor x, Tensor codes, Tensor scales) -> Tensor");
}

TORCH_LIBRARY_IMPL(chatlab, CPU, m) {
  m.impl("q4_linear", &q4_linear);
  m.impl("q8_linear", &q8_linear);
}
