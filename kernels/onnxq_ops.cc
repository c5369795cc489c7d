// onnxq's onnxruntime custom ops (domain "onnxq"), stateless: every parameter is an input or
// an attribute, so a session can run with new encodings without being rebuilt and a saved
// model runs in any process that loads this library.
//
//   FakeQuantize(X, scale, offset) -> Y
//     q = clamp(round(X / scale) - offset, qmin, qmax);  Y = (q + offset) * scale
//     scale/offset: one value (per tensor), or one per channel along `axis`, or a block grid
//     (`block_size` > 0 splits `axis` into blocks; the grid has the tensor's shape with that
//     axis divided by block_size). `rounding`: 0 = half to even (ONNX QuantizeLinear),
//     1 = half away from zero (AIMET's C round). `float16`: 1 = round-trip through float16.
//
//   ElementwiseChain(X, constants) -> Y
//     a chain of element-wise float ops and per-tensor fake-quantizations run in one pass over
//     X, each op rounded as onnxruntime's own kernel rounds it (no fused multiply-add), so Y
//     equals the separate ops bit for bit. `program` holds 7 ints per stage: opcode, operand a,
//     operand b, parameter index, qmin, qmax, rounding; stage k writes register k + 1, register
//     0 is X, Y is the last register. An operand >= 0 names a register, < 0 the constant
//     -operand - 1 (`constants`, float). Opcodes: 0 a+b, 1 a-b, 2 a*b, 3 a/b, 4 max(a, b),
//     5 min(a, b), 6 HardSigmoid (alpha, beta = constants p, p+1), 7 FakeQuantize (scale,
//     offset = constants p, p+1; qmin/qmax/rounding as FakeQuantize), 8 float16 round trip.
//
//   Statistics(X, grid) -> (min, max, histogram, grid_used)
//     per channel along `axis` (axis = -1: one channel): min and max of X (min is NaN when X
//     holds a NaN) and, when `bins` > 1, a histogram of `bins` equal bins. `grid` (double,
//     [1 or channels, 3]) holds each channel's (lo, width, headroom); a grid that does not
//     span the batch grows — bins merged k:1 with lo kept on an old edge — and an empty one
//     (width 0) starts from the batch's range plus `headroom` of its span each side, so no
//     value is ever dropped. `grid_used` ([channels, 2]: lo, width) is the grid counted on.
//     One pass over X when the given grids span the batch (extremes and counts together);
//     channels whose grid had to start or grow are counted again in a second pass.
//
//   onnxq_rounding_costs (a plain C function, not an op): tf_enhanced's rounding-cost matrix,
//   the search's whole cost in numpy, one loop here (see its comment below).
//
// Built by onnxq/calibrate/native.py against the official onnxruntime headers; links to
// nothing (ORT_API_MANUAL_INIT), so one build loads into any onnxruntime with a newer API.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11
// hot loops get an AVX2 copy chosen at load time; the baseline (-march=x86-64-v2) has SSE4.1
#define ONNXQ_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ONNXQ_MULTIVERSION
#endif

namespace {

struct Layout {
  int64_t outer = 1, channels = 1, inner = 1;
};

Layout split(const std::vector<int64_t>& shape, int64_t axis) {
  Layout l;
  if (axis < 0) {
    for (auto d : shape) l.inner *= d;
    return l;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(shape.size()); ++i) {
    if (i < axis) l.outer *= shape[i];
    else if (i == axis) l.channels = shape[i];
    else l.inner *= shape[i];
  }
  return l;
}

inline float round_half_even(float v) { return std::nearbyint(v); }
inline float round_half_away(float v) { return std::round(v); }

float to_half_and_back(float v) {
  Ort::Float16_t h(v);
  return h.ToFloat();
}

// Fake-quantizes n contiguous values; their scale/offset advance by `ps` per value (0: one
// pair for the whole run, 1: one per value, as along the inner axis of a block grid).
template <bool kHalfAway>
inline void fake_quant_impl(const float* x, float* y, int64_t n, const float* s, const float* o,
                            int64_t ps, float lo, float hi) {
  if (ps == 0) {
    const float sc = s[0], of = o[0];
    for (int64_t i = 0; i < n; ++i) {
      float r = kHalfAway ? round_half_away(x[i] / sc) : round_half_even(x[i] / sc);
      float q = std::min(std::max(r - of, lo), hi) + 0.0f;
      y[i] = (q + of) * sc;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float sc = s[i * ps], of = o[i * ps];
    float r = kHalfAway ? round_half_away(x[i] / sc) : round_half_even(x[i] / sc);
    float q = std::min(std::max(r - of, lo), hi) + 0.0f;
    y[i] = (q + of) * sc;
  }
}

ONNXQ_MULTIVERSION
void fake_quant_half_even(const float* x, float* y, int64_t n, const float* s, const float* o,
                          int64_t ps, float lo, float hi) {
  fake_quant_impl<false>(x, y, n, s, o, ps, lo, hi);
}

ONNXQ_MULTIVERSION
void fake_quant_half_away(const float* x, float* y, int64_t n, const float* s, const float* o,
                          int64_t ps, float lo, float hi) {
  fake_quant_impl<true>(x, y, n, s, o, ps, lo, hi);
}

struct FakeQuantizeKernel {
  int64_t qmin, qmax, axis, block_size, rounding, float16;

  FakeQuantizeKernel(const OrtApi&, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    qmin = ki.GetAttribute<int64_t>("qmin");
    qmax = ki.GetAttribute<int64_t>("qmax");
    axis = attr_or(ki, "axis", 0);
    block_size = attr_or(ki, "block_size", 0);
    rounding = attr_or(ki, "rounding", 0);
    float16 = attr_or(ki, "float16", 0);
  }

  static int64_t attr_or(Ort::ConstKernelInfo& ki, const char* name, int64_t fallback) {
    try {
      return ki.GetAttribute<int64_t>(name);
    } catch (const Ort::Exception&) {
      return fallback;
    }
  }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    auto X = ctx.GetInput(0);
    auto S = ctx.GetInput(1);
    auto O = ctx.GetInput(2);
    auto shape = X.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t n = X.GetTensorTypeAndShapeInfo().GetElementCount();
    const int64_t ns = S.GetTensorTypeAndShapeInfo().GetElementCount();
    if (O.GetTensorTypeAndShapeInfo().GetElementCount() != ns)
      throw std::runtime_error("FakeQuantize: scale and offset differ in size");
    const float* x = X.GetTensorData<float>();
    const float* s = S.GetTensorData<float>();
    const float* o = O.GetTensorData<float>();
    float* y = ctx.GetOutput(0, shape).GetTensorMutableData<float>();
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    if (float16) {
      for (int64_t i = 0; i < n; ++i) y[i] = to_half_and_back(x[i]);
      return;
    }
    int64_t ax = axis < 0 ? axis + static_cast<int64_t>(shape.size()) : axis;
    // Work is cut into spans of contiguous elements sharing one (scale, offset), then run on
    // onnxruntime's intra-op thread pool.
    Work w{this, x, y, s, o, lo, hi, {}};
    if (ns == 1) {
      const int64_t chunk = 1 << 15;
      for (int64_t start = 0; start < n; start += chunk)
        w.spans.push_back({start, std::min(chunk, n - start), 0, 0});
    } else {
      Layout l = split(shape, ax);
      if (block_size > 0) {
        // a row of `inner` values of one (outer, channel) uses the grid row of its block,
        // one scale per inner position
        const int64_t blocks = (l.channels + block_size - 1) / block_size;
        if (ns != l.outer * blocks * l.inner)
          throw std::runtime_error("FakeQuantize: scale does not match the block grid");
        const int64_t ps = l.inner > 1 ? 1 : 0;
        for (int64_t a = 0; a < l.outer; ++a)
          for (int64_t c = 0; c < l.channels; ++c)
            w.spans.push_back(
                {(a * l.channels + c) * l.inner, l.inner, (a * blocks + c / block_size) * l.inner, ps});
      } else {
        if (ns != l.channels) throw std::runtime_error("FakeQuantize: scale size != channels");
        if (l.inner == 1) {  // channels last (a MatMul weight): a row walks the channels
          for (int64_t a = 0; a < l.outer; ++a) w.spans.push_back({a * l.channels, l.channels, 0, 1});
        } else {
          for (int64_t a = 0; a < l.outer; ++a)
            for (int64_t c = 0; c < l.channels; ++c)
              w.spans.push_back({(a * l.channels + c) * l.inner, l.inner, c, 0});
        }
      }
    }
    if (w.spans.size() > 1 && n >= (1 << 16)) {
      ctx.ParallelFor(&Work::run_one, w.spans.size(), 0, &w);
    } else {
      for (size_t i = 0; i < w.spans.size(); ++i) Work::run_one(&w, i);
    }
  }

  struct Span {
    int64_t start, count, param, param_stride;
  };
  struct Work {
    const FakeQuantizeKernel* kernel;
    const float *x;
    float* y;
    const float *s, *o;
    float lo, hi;
    std::vector<Span> spans;
    static void run_one(void* data, size_t i) {
      auto* w = static_cast<Work*>(data);
      const Span& sp = w->spans[i];
      w->kernel->run(w->x + sp.start, w->y + sp.start, sp.count, w->s + sp.param,
                     w->o + sp.param, sp.param_stride, w->lo, w->hi);
    }
  };

  void run(const float* x, float* y, int64_t n, const float* s, const float* o, int64_t ps,
           float lo, float hi) const {
    if (rounding) fake_quant_half_away(x, y, n, s, o, ps, lo, hi);
    else fake_quant_half_even(x, y, n, s, o, ps, lo, hi);
  }
};

struct FakeQuantizeOp : Ort::CustomOpBase<FakeQuantizeOp, FakeQuantizeKernel> {
  void* CreateKernel(const OrtApi& api, const OrtKernelInfo* info) const {
    return new FakeQuantizeKernel(api, info);
  }
  const char* GetName() const { return "FakeQuantize"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

// ElementwiseChain: the stages run over blocks of kBlock values, each stage a vectorized loop
// over the block, so the intermediates stay in L1 and X is read once.
constexpr int64_t kBlock = 1024;
constexpr int kStageInts = 7;
enum ChainOp { kAdd, kSub, kMul, kDiv, kMax, kMin, kHardSigmoid, kFakeQuant, kHalf };

struct ChainStage {
  int64_t op, a, b, p, qmin, qmax, rounding;
};

// d = f(a, b) over n values, each operand a register or (null) its constant: one loop per
// case, so each vectorizes.
template <class F>
inline void chain_binary(const float* a, const float* b, float ca, float cb, float* d, int64_t n,
                         F f) {
  if (a && b) {
    for (int64_t i = 0; i < n; ++i) d[i] = f(a[i], b[i]);
  } else if (a) {
    for (int64_t i = 0; i < n; ++i) d[i] = f(a[i], cb);
  } else if (b) {
    for (int64_t i = 0; i < n; ++i) d[i] = f(ca, b[i]);
  } else {
    const float v = f(ca, cb);
    for (int64_t i = 0; i < n; ++i) d[i] = v;
  }
}

// One stage over n values; a/b point at a register, or are null and ca/cb are the constants.
ONNXQ_MULTIVERSION
void chain_stage(const ChainStage& st, const float* a, const float* b, float ca, float cb,
                 const float* constants, float* d, int64_t n) {
  switch (st.op) {
    case kAdd: chain_binary(a, b, ca, cb, d, n, [](float u, float v) { return u + v; }); break;
    case kSub: chain_binary(a, b, ca, cb, d, n, [](float u, float v) { return u - v; }); break;
    case kMul: chain_binary(a, b, ca, cb, d, n, [](float u, float v) { return u * v; }); break;
    case kDiv: chain_binary(a, b, ca, cb, d, n, [](float u, float v) { return u / v; }); break;
    case kMax:
      chain_binary(a, b, ca, cb, d, n, [](float u, float v) { return std::max(u, v); });
      break;
    case kMin:
      chain_binary(a, b, ca, cb, d, n, [](float u, float v) { return std::min(u, v); });
      break;
    case kHardSigmoid: {
      const float alpha = constants[st.p], beta = constants[st.p + 1];
      for (int64_t i = 0; i < n; ++i) d[i] = std::max(0.0f, std::min(1.0f, alpha * a[i] + beta));
      break;
    }
    case kFakeQuant: {
      const float lo = static_cast<float>(st.qmin), hi = static_cast<float>(st.qmax);
      const float* so = constants + st.p;
      if (st.rounding) fake_quant_impl<true>(a, d, n, so, so + 1, 0, lo, hi);
      else fake_quant_impl<false>(a, d, n, so, so + 1, 0, lo, hi);
      break;
    }
    default:
      for (int64_t i = 0; i < n; ++i) d[i] = to_half_and_back(a[i]);
  }
}

struct ElementwiseChainKernel {
  std::vector<ChainStage> stages;

  ElementwiseChainKernel(const OrtApi&, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    auto prog = ki.GetAttributes<int64_t>("program");
    if (prog.empty() || prog.size() % kStageInts != 0)
      throw std::runtime_error("ElementwiseChain: program is not a whole number of stages");
    for (size_t i = 0; i < prog.size(); i += kStageInts) {
      ChainStage st{prog[i], prog[i + 1], prog[i + 2], prog[i + 3], prog[i + 4], prog[i + 5], prog[i + 6]};
      const int64_t k = static_cast<int64_t>(stages.size());
      if (st.op < kAdd || st.op > kHalf || st.a > k || st.b > k || (st.op >= kHardSigmoid && st.a < 0))
        throw std::runtime_error("ElementwiseChain: malformed stage " + std::to_string(k));
      stages.push_back(st);
    }
  }

  struct Work {
    const ElementwiseChainKernel* kernel;
    const float *x, *c;
    float* y;
    int64_t n, nc, per_item;
    static void run_one(void* data, size_t item) {
      auto* w = static_cast<Work*>(data);
      const int64_t begin = static_cast<int64_t>(item) * w->per_item;
      const int64_t end = std::min(w->n, begin + w->per_item);
      const auto& stages = w->kernel->stages;
      // registers 1..k (0 is X itself), kept per thread: no allocation per item
      thread_local std::vector<float> regs;
      if (regs.size() < stages.size() * kBlock) regs.resize(stages.size() * kBlock);
      for (int64_t s = begin; s < end; s += kBlock) {
        const int64_t m = std::min(kBlock, end - s);
        for (size_t k = 0; k < stages.size(); ++k) {
          const ChainStage& st = stages[k];
          auto reg = [&](int64_t r) -> const float* {
            if (r < 0) return nullptr;
            return r == 0 ? w->x + s : regs.data() + (r - 1) * kBlock;
          };
          auto cst = [&](int64_t r) { return r < 0 ? w->c[-r - 1] : 0.0f; };
          float* d = k + 1 == stages.size() ? w->y + s : regs.data() + k * kBlock;
          chain_stage(st, reg(st.a), reg(st.b), cst(st.a), cst(st.b), w->c, d, m);
        }
      }
    }
  };

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    auto X = ctx.GetInput(0);
    auto C = ctx.GetInput(1);
    auto shape = X.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t n = X.GetTensorTypeAndShapeInfo().GetElementCount();
    const int64_t nc = C.GetTensorTypeAndShapeInfo().GetElementCount();
    for (const auto& st : stages) {
      const int64_t need = st.op == kHardSigmoid || st.op == kFakeQuant ? st.p + 2 : 0;
      if (-st.a > nc || -st.b > nc || need > nc)
        throw std::runtime_error("ElementwiseChain: a stage reads past the constants");
    }
    Work w{this, X.GetTensorData<float>(), C.GetTensorData<float>(),
           ctx.GetOutput(0, shape).GetTensorMutableData<float>(), n, nc, 32 * kBlock};
    const int64_t items = (n + w.per_item - 1) / w.per_item;
    if (items > 1) ctx.ParallelFor(&Work::run_one, static_cast<size_t>(items), 0, &w);
    else if (items == 1) Work::run_one(&w, 0);
  }
};

struct ElementwiseChainOp : Ort::CustomOpBase<ElementwiseChainOp, ElementwiseChainKernel> {
  void* CreateKernel(const OrtApi& api, const OrtKernelInfo* info) const {
    return new ElementwiseChainKernel(api, info);
  }
  const char* GetName() const { return "ElementwiseChain"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

// The grid rules of onnxq/quantization/histogram.py (StreamingHistogram._start and _grow),
// in the same double-precision operations in the same order, so both sides reach the same
// grid bit for bit (the caller checks, and counts again on its own grid if they ever differ).
struct Grid {
  double lo = 0, width = 0;
};

Grid start_grid(double lo, double hi, double headroom, int64_t bins) {
  double span = hi - lo;
  if (span <= 0) {  // a constant: a small grid around it
    span = std::max(std::fabs(lo), 1.0) * 1e-6;
    lo -= span / 2;
  }
  Grid g;
  g.lo = lo - span * headroom;
  g.width = span * (1 + 2 * headroom) * (1 + 1e-9) / static_cast<double>(bins);
  return g;
}

Grid grow_grid(Grid old, double lo, double hi, int64_t bins) {
  const double width = old.width, old_lo = old.lo, nb = static_cast<double>(bins);
  const int64_t below = std::max<int64_t>(static_cast<int64_t>(std::ceil((old_lo - lo) / width)), 0);
  int64_t k = std::max<int64_t>(static_cast<int64_t>(std::ceil((hi - lo) / (width * nb))), 1);
  int64_t m;
  while (true) {
    m = (below + k - 1) / k * k;  // old bins below, a multiple of k: old_lo stays an edge
    if (old_lo - static_cast<double>(m) * width + static_cast<double>(k) * width * nb >= hi) break;
    ++k;
  }
  return {old_lo - static_cast<double>(m) * width, width * static_cast<double>(k)};
}

// min/max of n floats, and whether any is NaN. Multi-versioned: AVX2 where the CPU has it.
ONNXQ_MULTIVERSION
void min_max(const float* p, int64_t n, float& lo_out, float& hi_out, bool& nan_out) {
  float lo = lo_out, hi = hi_out;
  int nan = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    lo = p[i] < lo ? p[i] : lo;
    hi = p[i] > hi ? p[i] : hi;
    nan |= p[i] != p[i];
  }
  lo_out = lo;
  hi_out = hi;
  nan_out = nan_out || nan;
}

// Bin index of each value: floor((v - lo) / width) in double (numpy's formula, so counts match
// np.histogram exactly), the top edge in the last bin, values outside (and NaN) to `bins`.
// With kExtremes, min/max/NaN of the values too, in the same vectorized loop.
template <bool kExtremes>
inline void bin_indices_impl(const float* p, int64_t n, double lo, double width, double hi,
                             int64_t bins, int32_t* idx, float& lo_out, float& hi_out,
                             bool& nan_out) {
  const double out = static_cast<double>(bins), last = static_cast<double>(bins - 1);
  float mn = lo_out, mx = hi_out;
  int nan = 0;
#pragma omp simd reduction(min : mn) reduction(max : mx) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {  // branch-free, so it vectorizes
    const float f = p[i];
    if (kExtremes) {
      mn = f < mn ? f : mn;
      mx = f > mx ? f : mx;
      nan |= f != f;
    }
    const double v = f;
    const bool inside = (v >= lo) & (v <= hi);
    double t = (v - lo) / width;
    t = t < last ? t : last;  // also the top edge: last bin
    t = inside ? t : out;     // selects stay in double: x86 has no vector double->int64
    idx[i] = static_cast<int32_t>(t);
  }
  lo_out = mn;
  hi_out = mx;
  nan_out = nan_out || nan;
}

ONNXQ_MULTIVERSION
void bin_indices(const float* p, int64_t n, double lo, double width, double hi, int64_t bins,
                 int32_t* idx) {
  float mn = 0, mx = 0;
  bool nan = false;
  bin_indices_impl<false>(p, n, lo, width, hi, bins, idx, mn, mx, nan);
}

ONNXQ_MULTIVERSION
void bin_indices_min_max(const float* p, int64_t n, double lo, double width, double hi,
                         int64_t bins, int32_t* idx, float& mn, float& mx, bool& nan) {
  bin_indices_impl<true>(p, n, lo, width, hi, bins, idx, mn, mx, nan);
}

struct StatisticsKernel {
  int64_t axis, bins;

  StatisticsKernel(const OrtApi&, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    axis = FakeQuantizeKernel::attr_or(ki, "axis", -1);
    bins = FakeQuantizeKernel::attr_or(ki, "bins", 512);
  }

  // One work item: `count` contiguous elements at `start` of channel `channel`, accumulating
  // into slot `slot` (per-tensor statistics use one slot per chunk and sum them afterwards;
  // per-channel ones use the channel's own slot).
  struct Item {
    int64_t start, count, channel, slot;
  };
  struct Work {
    const float* x;
    // a slot has kLanes interleaved copies of its counts, each of `stride` = bins + 1 (the
    // last: values outside), so runs of equal bins do not serialise on one counter
    static constexpr int64_t kLanes = 4;
    int64_t bins, stride;
    std::vector<Item> items;
    std::vector<float> mn, mx;
    std::vector<char> nan;
    std::vector<Grid> grid;  // per channel
    // 32-bit counters: 4 lanes of 2049 bins stay within a core's 32 KB L1 (a slot counts at
    // most one channel of one batch, checked below to fit)
    std::vector<uint32_t> hist;

    std::vector<char> recount;  // per channel: its grid changed after the first pass
    bool counting_first = false;  // the first pass also counts on the given grids

    static void scan(void* data, size_t k) {  // first pass: extremes (and counts if gridded)
      auto* w = static_cast<Work*>(data);
      const Item& it = w->items[k];
      bool nan = w->nan[it.slot];
      if (!w->counting_first) {
        min_max(w->x + it.start, it.count, w->mn[it.slot], w->mx[it.slot], nan);
      } else {
        count_span(w, it, 0, it.count, &nan);
      }
      w->nan[it.slot] = nan;
    }
    static void count(void* data, size_t k) {  // second pass: counts on a changed grid
      auto* w = static_cast<Work*>(data);
      const Item& it = w->items[k];
      if (!w->recount[it.channel]) return;
      count_span(w, it, 0, it.count, nullptr);
    }
    // counts of elements [from, from + count) of an item; with `nan`, its min/max/NaN too
    static void count_span(Work* w, const Item& it, int64_t from, int64_t count, bool* nan) {
      const Grid g = w->grid[it.channel];
      const double hi = g.lo + g.width * static_cast<double>(w->bins);
      uint32_t* h = w->hist.data() + it.slot * kLanes * w->stride;
      uint32_t *h0 = h, *h1 = h + w->stride, *h2 = h + 2 * w->stride, *h3 = h + 3 * w->stride;
      constexpr int64_t kBlock = 2048;
      int32_t idx[kBlock];
      for (int64_t s = from; s < from + count; s += kBlock) {
        const int64_t n = std::min(kBlock, from + count - s);
        if (nan) {
          bin_indices_min_max(w->x + it.start + s, n, g.lo, g.width, hi, w->bins, idx,
                              w->mn[it.slot], w->mx[it.slot], *nan);
        } else {
          bin_indices(w->x + it.start + s, n, g.lo, g.width, hi, w->bins, idx);
        }
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
          h0[idx[i]] += 1;
          h1[idx[i + 1]] += 1;
          h2[idx[i + 2]] += 1;
          h3[idx[i + 3]] += 1;
        }
        for (; i < n; ++i) h0[idx[i]] += 1;
      }
    }
  };

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    auto X = ctx.GetInput(0);
    auto shape = X.GetTensorTypeAndShapeInfo().GetShape();
    auto G = ctx.GetInput(1);
    const int64_t grid_rows = G.GetTensorTypeAndShapeInfo().GetElementCount() / 3;
    const double* grid_in = G.GetTensorData<double>();
    Layout l = split(shape, axis < 0 ? -1 : axis);
    const int64_t C = l.channels;
    if (grid_rows != 1 && grid_rows != C)
      throw std::runtime_error("Statistics: grid needs 1 or one row per channel of 3 values");
    Work w;
    w.x = X.GetTensorData<float>();
    w.bins = bins;
    w.stride = bins + 1;
    int64_t slots;
    if (C == 1) {
      // at most 16 chunks: each has its own counts (lanes × bins), zeroed and summed after
      const int64_t n = l.outer * l.inner;
      const int64_t chunk = std::max<int64_t>(int64_t{1} << 16, (n + 15) / 16);
      slots = std::max<int64_t>(1, (n + chunk - 1) / chunk);
      for (int64_t k = 0; k < slots; ++k)
        w.items.push_back({k * chunk, std::min(chunk, n - k * chunk), 0, k});
    } else {
      slots = C;
      for (int64_t a = 0; a < l.outer; ++a)
        for (int64_t c = 0; c < C; ++c) w.items.push_back({(a * C + c) * l.inner, l.inner, c, c});
    }
    w.mn.assign(slots, std::numeric_limits<float>::infinity());
    w.mx.assign(slots, -std::numeric_limits<float>::infinity());
    w.nan.assign(slots, 0);
    // per channel, items of one channel share a slot, so they run in order
    auto for_items = [&](void (*fn)(void*, size_t)) {
      if (C == 1 && slots > 1) ctx.ParallelFor(fn, w.items.size(), 0, &w);
      else for (size_t k = 0; k < w.items.size(); ++k) fn(&w, k);
    };
    // the grids given; when every channel has one, the first pass counts on it too and only
    // channels whose batch falls outside their grid are counted again
    w.grid.resize(C);
    w.counting_first = bins > 1;
    for (int64_t c = 0; c < C; ++c) {
      const double* row = grid_in + 3 * (grid_rows == 1 ? 0 : c);
      w.grid[c] = {row[0], row[1]};
      w.counting_first = w.counting_first && row[1] > 0;
    }
    if (l.outer * l.inner >= (int64_t{1} << 32))
      throw std::runtime_error("Statistics: over 2^32 values in one channel of one batch");
    w.hist.assign(slots * Work::kLanes * w.stride, 0);
    for_items(&Work::scan);
    std::vector<float> mn(C), mx(C);
    bool nan = false;
    if (C == 1) {
      mn[0] = *std::min_element(w.mn.begin(), w.mn.end());
      mx[0] = *std::max_element(w.mx.begin(), w.mx.end());
    } else {
      mn = w.mn;
      mx = w.mx;
    }
    for (char c : w.nan) nan = nan || c;
    if (nan) std::fill(mn.begin(), mn.end(), std::numeric_limits<float>::quiet_NaN());
    // the grid each channel is counted on: the given one, started or grown to cover the batch
    const bool counting = bins > 1 && !nan && l.outer * l.inner > 0;
    w.recount.assign(C, 0);
    bool any = false;
    for (int64_t c = 0; c < C && counting; ++c) {
      const double* row = grid_in + 3 * (grid_rows == 1 ? 0 : c);
      Grid g = w.grid[c];
      const double lo = mn[c], hi = mx[c], top = g.lo + g.width * static_cast<double>(bins);
      if (!(g.width > 0)) {
        g = start_grid(lo, hi, row[2], bins);
      } else if (lo < g.lo || hi > top) {
        g = grow_grid(g, std::min(lo, g.lo), std::max(hi, top), bins);
      } else if (w.counting_first) {
        continue;  // counted in the first pass
      }
      w.grid[c] = g;
      w.recount[c] = 1;
      any = true;
    }
    if (!counting) {
      std::fill(w.hist.begin(), w.hist.end(), 0);
    } else if (any) {
      for (int64_t k = 0; k < slots; ++k)  // slots of recounted channels start again
        if (w.recount[C == 1 ? 0 : k])
          std::fill_n(w.hist.begin() + k * Work::kLanes * w.stride, Work::kLanes * w.stride, 0);
      for_items(&Work::count);
    }

    std::vector<int64_t> cshape{C}, hshape{C, bins}, gshape{C, 2};
    std::copy(mn.begin(), mn.end(), ctx.GetOutput(0, cshape).GetTensorMutableData<float>());
    std::copy(mx.begin(), mx.end(), ctx.GetOutput(1, cshape).GetTensorMutableData<float>());
    int64_t* h = ctx.GetOutput(2, hshape).GetTensorMutableData<int64_t>();
    double* grid_out = ctx.GetOutput(3, gshape).GetTensorMutableData<double>();
    std::fill(h, h + C * bins, 0);
    for (int64_t k = 0; k < slots; ++k) {
      const int64_t c = C == 1 ? 0 : k;
      for (int64_t lane = 0; lane < Work::kLanes; ++lane) {
        const uint32_t* src = w.hist.data() + (k * Work::kLanes + lane) * w.stride;
        for (int64_t b = 0; b < bins; ++b) h[c * bins + b] += src[b];
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      grid_out[2 * c] = w.grid[c].lo;
      grid_out[2 * c + 1] = w.grid[c].width;
    }
  }
};

struct StatisticsOp : Ort::CustomOpBase<StatisticsOp, StatisticsKernel> {
  void* CreateKernel(const OrtApi& api, const OrtKernelInfo* info) const {
    return new StatisticsKernel(api, info);
  }
  const char* GetName() const { return "Statistics"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    return i == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetOutputType(size_t i) const {
    if (i == 2) return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    if (i == 3) return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

}  // namespace

// tf_enhanced's rounding cost (onnxq/quantization/tf_enhanced.py, called through ctypes): for
// each candidate grid c (step delta[c], offset offset[c]), the sum over the used bins j whose
// index bins[j] (ascending) lies in [lo_i[c], hi_i[c]) of p[j] * (mid[j] - q)^2, where
// q = (round(mid[j] / delta - offset) + offset) * delta in float32 with C's round (halves away
// from zero), each operation rounded as numpy rounds it; products and sums in double.
extern "C" __attribute__((visibility("default"))) void onnxq_rounding_costs(
    const float* mids, const float* p, const int64_t* bins, int64_t n, const float* delta,
    const float* offset, const int64_t* lo_i, const int64_t* hi_i, int64_t candidates,
    double* out) {
  for (int64_t c = 0; c < candidates; ++c) {
    const float d = delta[c], o = offset[c];
    // the bins inside a grid are a contiguous run of the ascending used bins
    const int64_t j0 = std::lower_bound(bins, bins + n, lo_i[c]) - bins;
    const int64_t j1 = std::lower_bound(bins, bins + n, hi_i[c]) - bins;
    double acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = j0; j < j1; ++j) {
      float q = mids[j] / d;
      q -= o;
      q = std::copysign(std::floor(std::fabs(q) + 0.5f), q);
      q += o;
      q *= d;
      float e = mids[j] - q;
      e *= e;
      acc += static_cast<double>(e) * static_cast<double>(p[j]);
    }
    out[c] = acc;
  }
}

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  static FakeQuantizeOp fake_quantize;
  static StatisticsOp statistics;
  static ElementwiseChainOp elementwise_chain;
  try {
    Ort::CustomOpDomain domain("onnxq");
    domain.Add(&fake_quantize);
    domain.Add(&statistics);
    domain.Add(&elementwise_chain);
    Ort::UnownedSessionOptions(options).Add(domain);
    // the domain must outlive the session options: hand it over on purpose
    static std::vector<Ort::CustomOpDomain> keep;
    keep.push_back(std::move(domain));
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
