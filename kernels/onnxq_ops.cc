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
//   Statistics(X, range_min, range_max) -> (min, max, histogram)
//     per channel along `axis` (axis = -1: one channel): min and max of X, and a histogram of
//     `bins` equal bins over [range_min, range_max] (values outside are not counted; compare
//     min/max with the range to see whether any were). One-element ranges apply to every
//     channel; an empty range (min == max) skips the histogram.
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

template <bool kHalfAway>
void fake_quant_run(const float* x, float* y, int64_t n, float s, float o, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    float r = kHalfAway ? round_half_away(x[i] / s) : round_half_even(x[i] / s);
    float q = std::min(std::max(r - o, lo), hi) + 0.0f;
    y[i] = (q + o) * s;
  }
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
        w.spans.push_back({start, std::min(chunk, n - start), 0});
    } else {
      Layout l = split(shape, ax);
      if (block_size > 0) {
        const int64_t blocks = (l.channels + block_size - 1) / block_size;
        if (ns != l.outer * blocks * l.inner)
          throw std::runtime_error("FakeQuantize: scale does not match the block grid");
        for (int64_t a = 0; a < l.outer; ++a)
          for (int64_t c = 0; c < l.channels; ++c)
            for (int64_t i = 0; i < l.inner; ++i)
              w.spans.push_back(
                  {(a * l.channels + c) * l.inner + i, 1, (a * blocks + c / block_size) * l.inner + i});
      } else {
        if (ns != l.channels) throw std::runtime_error("FakeQuantize: scale size != channels");
        for (int64_t a = 0; a < l.outer; ++a)
          for (int64_t c = 0; c < l.channels; ++c)
            w.spans.push_back({(a * l.channels + c) * l.inner, l.inner, c});
      }
    }
    if (w.spans.size() > 1 && n >= (1 << 16)) {
      ctx.ParallelFor(&Work::run_one, w.spans.size(), 0, &w);
    } else {
      for (size_t i = 0; i < w.spans.size(); ++i) Work::run_one(&w, i);
    }
  }

  struct Span {
    int64_t start, count, param;
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
      w->kernel->run(w->x + sp.start, w->y + sp.start, sp.count, w->s[sp.param], w->o[sp.param],
                     w->lo, w->hi);
    }
  };

  void run(const float* x, float* y, int64_t n, float s, float o, float lo, float hi) const {
    if (rounding) fake_quant_run<true>(x, y, n, s, o, lo, hi);
    else fake_quant_run<false>(x, y, n, s, o, lo, hi);
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

struct StatisticsKernel {
  int64_t axis, bins;

  StatisticsKernel(const OrtApi&, const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    axis = FakeQuantizeKernel::attr_or(ki, "axis", -1);
    bins = FakeQuantizeKernel::attr_or(ki, "bins", 512);
  }

  // One work item: `count` contiguous elements at `start`, for channel `channel`, writing its
  // min, max and counts into slot `slot` (per-tensor statistics use one slot per chunk and
  // are summed afterwards; per-channel ones use the channel's own slot).
  struct Item {
    int64_t start, count, channel, slot;
  };
  struct Work {
    const float* x;
    const float *rmin, *rmax;
    int64_t rstride, bins;
    std::vector<Item> items;
    std::vector<float> mn, mx;
    std::vector<int64_t> hist;
    static void run_one(void* data, size_t k) {
      auto* w = static_cast<Work*>(data);
      const Item& it = w->items[k];
      const float* p = w->x + it.start;
      float lo_c = w->mn[it.slot], hi_c = w->mx[it.slot];
#pragma omp simd reduction(min : lo_c) reduction(max : hi_c)
      for (int64_t i = 0; i < it.count; ++i) {
        lo_c = p[i] < lo_c ? p[i] : lo_c;
        hi_c = p[i] > hi_c ? p[i] : hi_c;
      }
      w->mn[it.slot] = lo_c;
      w->mx[it.slot] = hi_c;
      const double lo = w->rmin[it.channel * w->rstride], hi = w->rmax[it.channel * w->rstride];
      const double width = (hi - lo) / w->bins;
      if (!(width > 0)) return;
      int64_t* hc = w->hist.data() + it.slot * w->bins;
      const int64_t last = w->bins - 1;
      for (int64_t i = 0; i < it.count; ++i) {
        const double v = p[i];
        if (v < lo || v > hi) continue;
        const int64_t b = static_cast<int64_t>((v - lo) / width);
        hc[b < last ? b : last] += 1;
      }
    }
  };

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    auto X = ctx.GetInput(0);
    auto shape = X.GetTensorTypeAndShapeInfo().GetShape();
    auto Rmin = ctx.GetInput(1);
    Work w;
    w.x = X.GetTensorData<float>();
    w.rmin = Rmin.GetTensorData<float>();
    w.rmax = ctx.GetInput(2).GetTensorData<float>();
    // one range for all channels when the ranges hold a single value
    w.rstride = Rmin.GetTensorTypeAndShapeInfo().GetElementCount() == 1 ? 0 : 1;
    w.bins = bins;
    Layout l = split(shape, axis < 0 ? -1 : axis);
    const int64_t C = l.channels;
    int64_t slots;
    if (C == 1) {
      const int64_t n = l.outer * l.inner, chunk = 1 << 16;
      slots = std::max<int64_t>(1, (n + chunk - 1) / chunk);
      for (int64_t k = 0; k < slots; ++k)
        w.items.push_back({k * chunk, std::min(chunk, n - k * chunk), 0, k});
    } else {
      slots = C;
      for (int64_t a = 0; a < l.outer; ++a)
        for (int64_t c = 0; c < C; ++c)
          w.items.push_back({(a * C + c) * l.inner, l.inner, c, c});
    }
    w.mn.assign(slots, std::numeric_limits<float>::infinity());
    w.mx.assign(slots, -std::numeric_limits<float>::infinity());
    w.hist.assign(slots * bins, 0);
    if (C == 1 && slots > 1) {
      ctx.ParallelFor(&Work::run_one, w.items.size(), 0, &w);
    } else {
      // per channel: items of one channel share a slot, so they run in order
      for (size_t k = 0; k < w.items.size(); ++k) Work::run_one(&w, k);
    }
    std::vector<int64_t> cshape{C}, hshape{C, bins};
    float* mn = ctx.GetOutput(0, cshape).GetTensorMutableData<float>();
    float* mx = ctx.GetOutput(1, cshape).GetTensorMutableData<float>();
    int64_t* h = ctx.GetOutput(2, hshape).GetTensorMutableData<int64_t>();
    if (C == 1) {
      mn[0] = *std::min_element(w.mn.begin(), w.mn.end());
      mx[0] = *std::max_element(w.mx.begin(), w.mx.end());
      std::fill(h, h + bins, 0);
      for (int64_t k = 0; k < slots; ++k)
        for (int64_t b = 0; b < bins; ++b) h[b] += w.hist[k * bins + b];
    } else {
      std::copy(w.mn.begin(), w.mn.end(), mn);
      std::copy(w.mx.begin(), w.mx.end(), mx);
      std::copy(w.hist.begin(), w.hist.end(), h);
    }
  }
};

struct StatisticsOp : Ort::CustomOpBase<StatisticsOp, StatisticsKernel> {
  void* CreateKernel(const OrtApi& api, const OrtKernelInfo* info) const {
    return new StatisticsKernel(api, info);
  }
  const char* GetName() const { return "Statistics"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t i) const {
    return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  static FakeQuantizeOp fake_quantize;
  static StatisticsOp statistics;
  try {
    Ort::CustomOpDomain domain("onnxq");
    domain.Add(&fake_quantize);
    domain.Add(&statistics);
    Ort::UnownedSessionOptions(options).Add(domain);
    // the domain must outlive the session options: hand it over on purpose
    static std::vector<Ort::CustomOpDomain> keep;
    keep.push_back(std::move(domain));
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
