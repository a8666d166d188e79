// The CUDA kernels of amp, compiled once per process by NVRTC. No toolkit header is included, so the
// source compiles on any NVRTC: bf16 and f16 are 16-bit structs converted by hand (bf16, bit-exact with
// the `half` crate) or by PTX `cvt` instructions (f16). Every op computes in f32 (f64 for f64), like the
// CPU kernels, and rounds once to its output type.
//
// The same source also compiles as host C++ for the emulated GPU (`scripts/cuda-emulator`), which defines
// AMP_HOST_EMULATION and supplies the f16 conversions in software.
//
// Names: `<op>_<type>` or `<op>_<in>_<out>`, types f32 f64 bf16 f16 i64 bool (and u8/u16/u32/u64 for
// kernels that only move bits). Element counts are 64-bit; every kernel uses a grid-stride loop, so any
// grid size is correct.

typedef unsigned long long u64;
typedef long long i64;

struct bf16 { unsigned short bits; };
struct f16 { unsigned short bits; };

#define MAX_RANK 8
// How up to three inputs map onto an output under broadcasting: the output shape and each input's element
// strides over the output's dimensions (0 where an input is broadcast). Mirrors `cuda::Layout`.
struct Layout {
    int rank;
    int pad;
    u64 shape[MAX_RANK];
    u64 stride[3][MAX_RANK];
};

// Reduction geometry: `outer` blocks of `size` reduced elements `inner` apart. Mirrors `cpu::Dim3`.
struct Dim3 { u64 outer; u64 size; u64 inner; };

#define AMP_NAN __int_as_float(0x7fc00000)
#define AMP_INF __int_as_float(0x7f800000)
#define GRID_STRIDE(i, n) for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)blockDim.x * gridDim.x)

// ---- conversions -------------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_to_float(bf16 v) { return __uint_as_float(((unsigned)v.bits) << 16); }
__device__ __forceinline__ float f16_to_float(f16 v) {
#ifdef AMP_HOST_EMULATION
    return amp_f16_bits_to_float(v.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
#endif
}
// Round to nearest even; NaN stays NaN (quiet bit set), as `half::bf16::from_f32`.
__device__ __forceinline__ bf16 float_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (unsigned short)((u >> 16) | 0x40u);
        return r;
    }
    unsigned up = ((u & 0x8000u) != 0u && (u & 0x17fffu) != 0u) ? 1u : 0u;
    r.bits = (unsigned short)((u >> 16) + up);
    return r;
}
__device__ __forceinline__ f16 float_to_f16(float f) {
    f16 r;
#ifdef AMP_HOST_EMULATION
    r.bits = amp_float_to_f16_bits(f);
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
#endif
    return r;
}
__device__ __forceinline__ f16 double_to_f16(double d) {
    f16 r;
#ifdef AMP_HOST_EMULATION
    r.bits = amp_double_to_f16_bits(d);
#else
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(r.bits) : "d"(d));
#endif
    return r;
}
// f64 -> f32 rounding to odd: a later rounding to a narrower type is then correctly rounded (no double
// rounding), as the CPU casts do.
__device__ __forceinline__ float double_to_float_odd(double d) {
    float r = __double2float_rz(d);
    if ((double)r != d && d == d && !isinf(r)) r = __uint_as_float(__float_as_uint(r) | 1u);
    return r;
}
__device__ __forceinline__ double i64_to_double_odd(i64 i) {
    double r = __ll2double_rz(i);
    if (r != 9.2233720368547758e18 && (i64)r != i) r = __longlong_as_double(__double_as_longlong(r) | 1ll);
    return r;
}

// The arithmetic type of each element type.
template <class T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(bf16 v) { return bf16_to_float(v); }
__device__ __forceinline__ float to_acc(f16 v) { return f16_to_float(v); }

// Conversion of any element type to any other, rounding once (`convert<O>(x)`).
template <class O> struct Conv;
template <> struct Conv<float> {
    static __device__ float f(float x) { return x; }
    static __device__ float f(double x) { return (float)x; }
    static __device__ float f(bf16 x) { return bf16_to_float(x); }
    static __device__ float f(f16 x) { return f16_to_float(x); }
    static __device__ float f(i64 x) { return __ll2float_rn(x); }
    static __device__ float f(bool x) { return x ? 1.0f : 0.0f; }
};
template <> struct Conv<double> {
    static __device__ double f(float x) { return x; }
    static __device__ double f(double x) { return x; }
    static __device__ double f(bf16 x) { return bf16_to_float(x); }
    static __device__ double f(f16 x) { return f16_to_float(x); }
    static __device__ double f(i64 x) { return __ll2double_rn(x); }
    static __device__ double f(bool x) { return x ? 1.0 : 0.0; }
};
template <> struct Conv<bf16> {
    static __device__ bf16 f(float x) { return float_to_bf16(x); }
    static __device__ bf16 f(double x) { return float_to_bf16(double_to_float_odd(x)); }
    static __device__ bf16 f(bf16 x) { return x; }
    static __device__ bf16 f(f16 x) { return float_to_bf16(f16_to_float(x)); }
    static __device__ bf16 f(i64 x) { return float_to_bf16(double_to_float_odd(i64_to_double_odd(x))); }
    static __device__ bf16 f(bool x) { return float_to_bf16(x ? 1.0f : 0.0f); }
};
template <> struct Conv<f16> {
    static __device__ f16 f(float x) { return float_to_f16(x); }
    static __device__ f16 f(double x) { return double_to_f16(x); }
    static __device__ f16 f(bf16 x) { return float_to_f16(bf16_to_float(x)); }
    static __device__ f16 f(f16 x) { return x; }
    static __device__ f16 f(i64 x) { return double_to_f16(i64_to_double_odd(x)); }
    static __device__ f16 f(bool x) { return float_to_f16(x ? 1.0f : 0.0f); }
};
template <> struct Conv<i64> {
    // PTX's cvt.rzi saturates and maps NaN to 0, as Rust's `as`.
    static __device__ i64 f(float x) { return __float2ll_rz(x); }
    static __device__ i64 f(double x) { return __double2ll_rz(x); }
    static __device__ i64 f(bf16 x) { return __float2ll_rz(bf16_to_float(x)); }
    static __device__ i64 f(f16 x) { return __float2ll_rz(f16_to_float(x)); }
    static __device__ i64 f(i64 x) { return x; }
    static __device__ i64 f(bool x) { return x ? 1 : 0; }
};
template <> struct Conv<bool> {
    static __device__ bool f(float x) { return x != 0.0f; }
    static __device__ bool f(double x) { return x != 0.0; }
    static __device__ bool f(bf16 x) { return bf16_to_float(x) != 0.0f; }
    static __device__ bool f(f16 x) { return f16_to_float(x) != 0.0f; }
    static __device__ bool f(i64 x) { return x != 0; }
    static __device__ bool f(bool x) { return x; }
};
template <class O, class I> __device__ __forceinline__ O convert(I x) { return Conv<O>::f(x); }

// Offset of output element `i`'s operand `k` under a broadcast layout.
__device__ __forceinline__ u64 layout_offset(const Layout& l, int k, u64 i) {
    u64 off = 0;
    for (int d = l.rank - 1; d >= 0; --d) {
        u64 c = i % l.shape[d];
        i /= l.shape[d];
        off += c * l.stride[k][d];
    }
    return off;
}

// ---- casts -------------------------------------------------------------------------------------------

template <class I, class O> __device__ void cast_body(const I* x, O* y, u64 n) {
    GRID_STRIDE(i, n) y[i] = convert<O>(x[i]);
}

// Type lists, each twice: a list macro cannot expand inside its own expansion, so kernels over pairs of
// types use the first list for the input type and the second for the output type.
#define ALL_TYPES(X, ARG) X(f32, float, ARG) X(f64, double, ARG) X(bf16, bf16, ARG) X(f16, f16, ARG) X(i64, i64, ARG) X(bool, bool, ARG)
#define ALL_TYPES_OUT(X, ARG) X(f32, float, ARG) X(f64, double, ARG) X(bf16, bf16, ARG) X(f16, f16, ARG) X(i64, i64, ARG) X(bool, bool, ARG)
#define FLOAT_TYPES(X, ARG) X(f32, float, ARG) X(f64, double, ARG) X(bf16, bf16, ARG) X(f16, f16, ARG)
#define FLOAT_TYPES_OUT(X, ARG) X(f32, float, ARG) X(f64, double, ARG) X(bf16, bf16, ARG) X(f16, f16, ARG)

#define CAST_TO(on, O, IN) extern "C" __global__ void cast_##IN##_##on(const IN##_t* x, O* y, u64 n) { cast_body<IN##_t, O>(x, y, n); }
#define CAST_FROM(in, I, _) typedef I in##_t; ALL_TYPES_OUT(CAST_TO, in)
ALL_TYPES(CAST_FROM, _)

// ---- unary -------------------------------------------------------------------------------------------

// Op codes mirror `cuda::unary_code`.
template <class A> __device__ __forceinline__ A sigmoid_of(A x) {
    if (x >= (A)0) return (A)1 / ((A)1 + exp(-x));
    A e = exp(x);
    return e / ((A)1 + e);
}
template <class A> __device__ __forceinline__ A max_nan(A a, A b) { return (a != a || b != b) ? (A)AMP_NAN : (a > b ? a : b); }
template <class A> __device__ __forceinline__ A min_nan(A a, A b) { return (a != a || b != b) ? (A)AMP_NAN : (a < b ? a : b); }

template <class A> __device__ A unary_apply(int op, A x, double c0, double c1) {
    switch (op) {
        case 0: return -x;
        case 1: return fabs(x);
        case 2: return x * x;
        case 3: return sqrt(x);
        case 4: return (A)1 / sqrt(x);
        case 5: return (A)1 / x;
        case 6: return exp(x);
        case 7: return log(x);
        case 8: return log1p(x);
        case 9: return expm1(x);
        case 10: return x > (A)20 ? x : log1p(exp(x));
        case 11: return (x > (A)0 || x != x) ? x : (A)0;
        case 12: return (A)0.5 * x * ((A)1 + erf(x * (A)0.70710678118654752440));
        case 13: return x * sigmoid_of(x);
        case 14: return sigmoid_of(x);
        case 15: return tanh(x);
        case 16: return x + (A)c0;
        case 17: return x * (A)c0;
        case 18: return x / (A)c0;
        case 19: return (A)c0 - x;
        case 20: return (A)c0 / x;
        case 21: return pow(x, (A)c0);
        default: return min_nan(max_nan(x, (A)c0), (A)c1);
    }
}

template <class A> __device__ A unary_derivative(int op, A x, A y, double c0, double c1) {
    switch (op) {
        case 0: return (A)-1;
        case 1: return x > (A)0 ? (A)1 : (x < (A)0 ? (A)-1 : (A)0);
        case 2: return (A)2 * x;
        case 3: return (A)0.5 / y;
        case 4: return (A)-0.5 * y * y * y;
        case 5: return -(y * y);
        case 6: return y;
        case 7: return (A)1 / x;
        case 8: return (A)1 / ((A)1 + x);
        case 9: return y + (A)1;
        case 10: return x > (A)20 ? (A)1 : sigmoid_of(x);
        case 11: return x > (A)0 ? (A)1 : (A)0;
        case 12: {
            A cdf = (A)0.5 * ((A)1 + erf(x * (A)0.70710678118654752440));
            A pdf = exp((A)-0.5 * x * x) * (A)0.3989422804014327;
            return cdf + x * pdf;
        }
        case 13: {
            A s = sigmoid_of(x);
            return s * ((A)1 + x * ((A)1 - s));
        }
        case 14: return y * ((A)1 - y);
        case 15: return (A)1 - y * y;
        case 16: return (A)1;
        case 17: return (A)c0;
        case 18: return (A)1 / (A)c0;
        case 19: return (A)-1;
        case 20: return -(y / x);
        case 21: return c0 == 0.0 ? (A)0 : (A)c0 * pow(x, (A)(c0 - 1.0));
        default: return (x >= (A)c0 && x <= (A)c1) ? (A)1 : (A)0;
    }
}

#define UNARY_TO(on, O, IN) \
    extern "C" __global__ void unary_##IN##_##on(int op, double c0, double c1, const IN##_t* x, O* y, u64 n) { \
        GRID_STRIDE(i, n) y[i] = convert<O>(unary_apply(op, to_acc(x[i]), c0, c1)); \
    }
#define UNARY_FROM(in, I, _) FLOAT_TYPES_OUT(UNARY_TO, in)
FLOAT_TYPES(UNARY_FROM, _)

#define UNARY_BACKWARD(name, T, _) \
    extern "C" __global__ void unary_backward_##name(int op, double c0, double c1, const T* x, const T* y, const T* dy, T* dx, u64 n) { \
        GRID_STRIDE(i, n) dx[i] = convert<T>(to_acc(dy[i]) * unary_derivative(op, to_acc(x[i]), to_acc(y[i]), c0, c1)); \
    }
FLOAT_TYPES(UNARY_BACKWARD, _)

// ---- binary, compare, select, broadcast copy ----------------------------------------------------------

template <class A> __device__ __forceinline__ A binary_apply(int op, A a, A b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return max_nan(a, b);
        default: return min_nan(a, b);
    }
}

#define BINARY(name, T, _) \
    extern "C" __global__ void binary_##name(int op, Layout l, const T* a, const T* b, T* out, u64 n) { \
        GRID_STRIDE(i, n) out[i] = convert<T>(binary_apply(op, to_acc(a[layout_offset(l, 0, i)]), to_acc(b[layout_offset(l, 1, i)]))); \
    }
FLOAT_TYPES(BINARY, _)

template <class T> __device__ __forceinline__ bool compare_apply(int op, T x, T y) {
    switch (op) {
        case 0: return x == y;
        case 1: return x != y;
        case 2: return x < y;
        case 3: return x <= y;
        case 4: return x > y;
        case 5: return x >= y;
        default: return x == y || (x != x && y != y);
    }
}
__device__ __forceinline__ float comparable(bf16 v) { return bf16_to_float(v); }
__device__ __forceinline__ float comparable(f16 v) { return f16_to_float(v); }
__device__ __forceinline__ float comparable(float v) { return v; }
__device__ __forceinline__ double comparable(double v) { return v; }
__device__ __forceinline__ i64 comparable(i64 v) { return v; }
__device__ __forceinline__ int comparable(bool v) { return v ? 1 : 0; }

#define COMPARE(name, T, _) \
    extern "C" __global__ void compare_##name(int op, Layout l, const T* a, const T* b, bool* out, u64 n) { \
        GRID_STRIDE(i, n) out[i] = compare_apply(op, comparable(a[layout_offset(l, 0, i)]), comparable(b[layout_offset(l, 1, i)])); \
    }
ALL_TYPES(COMPARE, _)

// Kernels that move elements without looking at them exist once per element size.
#define BIT_TYPES(X) X(u8, unsigned char) X(u16, unsigned short) X(u32, unsigned) X(u64, u64)
#define MOVES(name, T) \
    extern "C" __global__ void select_##name(Layout l, const bool* c, const T* a, const T* b, T* out, u64 n) { \
        GRID_STRIDE(i, n) out[i] = c[layout_offset(l, 0, i)] ? a[layout_offset(l, 1, i)] : b[layout_offset(l, 2, i)]; \
    } \
    extern "C" __global__ void gather_layout_##name(Layout l, const T* x, T* out, u64 n) { \
        GRID_STRIDE(i, n) out[i] = x[layout_offset(l, 0, i)]; \
    } \
    extern "C" __global__ void copy_rows_##name(const T* src, u64 src_row, u64 src_off, T* dst, u64 dst_row, u64 dst_off, u64 len, u64 rows) { \
        GRID_STRIDE(i, len * rows) { u64 r = i / len, c = i % len; dst[r * dst_row + dst_off + c] = src[r * src_row + src_off + c]; } \
    }
BIT_TYPES(MOVES)

// ---- reductions ---------------------------------------------------------------------------------------

#define BLOCK 256

// Block-wide sum or max of one value per thread (every thread gets the result).
template <class A> __device__ A block_reduce(A v, int op, A* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            A a = shared[threadIdx.x], b = shared[threadIdx.x + s];
            shared[threadIdx.x] = op == 0 ? a + b : (op == 2 ? max_nan(a, b) : min_nan(a, b));
        }
        __syncthreads();
    }
    A r = shared[0];
    __syncthreads();
    return r;
}

// op: 0 sum, 1 mean, 2 max, 3 min (as `cpu::Reduce`). One block per (outer, inner) output.
#define REDUCE_TO(on, O, IN) \
    extern "C" __global__ void reduce_##IN##_##on(int op, Dim3 d, const IN##_t* x, O* out) { \
        typedef Acc<IN##_t>::type A; \
        __shared__ A shared[BLOCK]; \
        for (u64 o = blockIdx.x; o < d.outer * d.inner; o += gridDim.x) { \
            u64 base = (o / d.inner) * d.size * d.inner + o % d.inner; \
            A acc = op < 2 ? (A)0 : to_acc(x[base]); \
            for (u64 j = threadIdx.x; j < d.size; j += blockDim.x) { \
                A v = to_acc(x[base + j * d.inner]); \
                acc = op < 2 ? acc + v : (op == 2 ? max_nan(acc, v) : min_nan(acc, v)); \
            } \
            A r = block_reduce(acc, op < 2 ? 0 : op, shared); \
            if (op == 1) r = r * (A)(1.0 / (double)d.size); \
            if (threadIdx.x == 0) out[o] = convert<O>(r); \
        } \
    }
#define REDUCE_FROM(in, I, _) FLOAT_TYPES_OUT(REDUCE_TO, in)
FLOAT_TYPES(REDUCE_FROM, _)

// ---- softmax ------------------------------------------------------------------------------------------

// One block per row of `d.size` elements `d.inner` apart; `log` picks log_softmax.
#define SOFTMAX_TO(on, O, IN) \
    extern "C" __global__ void softmax_##IN##_##on(int log_out, Dim3 d, const IN##_t* x, O* out) { \
        typedef Acc<IN##_t>::type A; \
        __shared__ A shared[BLOCK]; \
        for (u64 o = blockIdx.x; o < d.outer * d.inner; o += gridDim.x) { \
            u64 base = (o / d.inner) * d.size * d.inner + o % d.inner; \
            A m = -(A)AMP_INF; \
            for (u64 j = threadIdx.x; j < d.size; j += blockDim.x) m = max_nan(m, to_acc(x[base + j * d.inner])); \
            m = block_reduce(m, 2, shared); \
            if (isinf(m) && m < (A)0) m = (A)0; \
            A s = (A)0; \
            for (u64 j = threadIdx.x; j < d.size; j += blockDim.x) s += exp(to_acc(x[base + j * d.inner]) - m); \
            s = block_reduce(s, 0, shared); \
            A ls = log(s); \
            for (u64 j = threadIdx.x; j < d.size; j += blockDim.x) { \
                A v = to_acc(x[base + j * d.inner]) - m; \
                out[base + j * d.inner] = convert<O>(log_out ? v - ls : exp(v) / s); \
            } \
        } \
    }
#define SOFTMAX_FROM(in, I, _) FLOAT_TYPES_OUT(SOFTMAX_TO, in)
FLOAT_TYPES(SOFTMAX_FROM, _)

// softmax: dx = y·(dy - Σ dy·y); log_softmax: dx = dy - exp(y)·Σ dy.
#define SOFTMAX_BACKWARD(name, T, _) \
    extern "C" __global__ void softmax_backward_##name(int log_out, Dim3 d, const T* y, const T* dy, T* dx) { \
        typedef Acc<T>::type A; \
        __shared__ A shared[BLOCK]; \
        for (u64 o = blockIdx.x; o < d.outer * d.inner; o += gridDim.x) { \
            u64 base = (o / d.inner) * d.size * d.inner + o % d.inner; \
            A s = (A)0; \
            for (u64 j = threadIdx.x; j < d.size; j += blockDim.x) { \
                u64 k = base + j * d.inner; \
                s += log_out ? to_acc(dy[k]) : to_acc(dy[k]) * to_acc(y[k]); \
            } \
            s = block_reduce(s, 0, shared); \
            for (u64 j = threadIdx.x; j < d.size; j += blockDim.x) { \
                u64 k = base + j * d.inner; \
                A g = to_acc(dy[k]), v = to_acc(y[k]); \
                dx[k] = convert<T>(log_out ? g - exp(v) * s : v * (g - s)); \
            } \
        } \
    }
FLOAT_TYPES(SOFTMAX_BACKWARD, _)

// ---- layer norm and RMS norm (rows of `cols` contiguous elements; one block per row) ------------------

#define NORM_TO(on, O, IN) \
    extern "C" __global__ void layer_norm_##IN##_##on(const IN##_t* x, O* out, Acc<IN##_t>::type* mean, Acc<IN##_t>::type* rstd, u64 rows, u64 cols, double eps) { \
        typedef Acc<IN##_t>::type A; \
        __shared__ A shared[BLOCK]; \
        for (u64 r = blockIdx.x; r < rows; r += gridDim.x) { \
            const IN##_t* row = x + r * cols; \
            A s = (A)0; \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) s += to_acc(row[j]); \
            A mu = block_reduce(s, 0, shared) / (A)cols; \
            A q = (A)0; \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) { A c = to_acc(row[j]) - mu; q += c * c; } \
            A rs = (A)1 / sqrt(block_reduce(q, 0, shared) / (A)cols + (A)eps); \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = convert<O>((to_acc(row[j]) - mu) * rs); \
            if (threadIdx.x == 0) { mean[r] = mu; rstd[r] = rs; } \
        } \
    } \
    extern "C" __global__ void rms_norm_##IN##_##on(const IN##_t* x, O* out, Acc<IN##_t>::type* rstd, u64 rows, u64 cols, double eps) { \
        typedef Acc<IN##_t>::type A; \
        __shared__ A shared[BLOCK]; \
        for (u64 r = blockIdx.x; r < rows; r += gridDim.x) { \
            const IN##_t* row = x + r * cols; \
            A q = (A)0; \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) { A v = to_acc(row[j]); q += v * v; } \
            A rs = (A)1 / sqrt(block_reduce(q, 0, shared) / (A)cols + (A)eps); \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) out[r * cols + j] = convert<O>(to_acc(row[j]) * rs); \
            if (threadIdx.x == 0) rstd[r] = rs; \
        } \
    }
#define NORM_FROM(in, I, _) FLOAT_TYPES_OUT(NORM_TO, in)
FLOAT_TYPES(NORM_FROM, _)

// `mean` is null for RMS norm.
#define NORM_BACKWARD(name, T, _) \
    extern "C" __global__ void norm_backward_##name(const T* x, const Acc<T>::type* mean, const Acc<T>::type* rstd, const T* dy, T* dx, u64 rows, u64 cols) { \
        typedef Acc<T>::type A; \
        __shared__ A shared[BLOCK]; \
        for (u64 r = blockIdx.x; r < rows; r += gridDim.x) { \
            A mu = mean ? mean[r] : (A)0, rs = rstd[r]; \
            A sg = (A)0, sgx = (A)0; \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) { \
                A g = to_acc(dy[r * cols + j]), xh = (to_acc(x[r * cols + j]) - mu) * rs; \
                sg += g; sgx += g * xh; \
            } \
            A mean_g = mean ? block_reduce(sg, 0, shared) / (A)cols : (A)0; \
            A mean_gx = block_reduce(sgx, 0, shared) / (A)cols; \
            for (u64 j = threadIdx.x; j < cols; j += blockDim.x) { \
                A g = to_acc(dy[r * cols + j]), xh = (to_acc(x[r * cols + j]) - mu) * rs; \
                dx[r * cols + j] = convert<T>(rs * (g - mean_g - xh * mean_gx)); \
            } \
        } \
    }
FLOAT_TYPES(NORM_BACKWARD, _)

// ---- training steps -----------------------------------------------------------------------------------

// Multiplies by `inv_scale` and sets `*found` when any element was NaN or infinite before scaling.
#define UNSCALE(name, T, _) \
    extern "C" __global__ void unscale_and_check_##name(T* g, u64 n, double inv_scale, int* found) { \
        typedef Acc<T>::type A; \
        bool bad = false; \
        GRID_STRIDE(i, n) { A v = to_acc(g[i]); bad |= !isfinite(v); g[i] = convert<T>(v * (A)inv_scale); } \
        if (bad) atomicOr(found, 1); \
    }
FLOAT_TYPES(UNSCALE, _)

// PyTorch's Adam/AdamW, as `cpu::adam_step` (same operations in the same order).
extern "C" __global__ void adam_step(float* w, const float* g, float* m, float* v, u64 n, float beta1, float beta2,
                                     float eps, float step_size, float inv_bias2_sqrt, float l2, float decay) {
    GRID_STRIDE(i, n) {
        float wi = w[i];
        float gi = g[i] + l2 * wi;
        wi *= decay;
        float mi = beta1 * m[i] + (1.0f - beta1) * gi;
        float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - step_size * mi / (sqrtf(vi) * inv_bias2_sqrt + eps);
    }
}

// PyTorch's SGD, as `cpu::sgd_step`; `b` is null without momentum.
extern "C" __global__ void sgd_step(float* w, const float* g, float* b, u64 n, float lr, float wd, float mu, float damp,
                                    int nesterov, int first_step) {
    GRID_STRIDE(i, n) {
        float gi = g[i] + wd * w[i];
        if (b) {
            float bi = first_step ? gi : mu * b[i] + (1.0f - damp) * gi;
            b[i] = bi;
            gi = nesterov ? gi + mu * bi : bi;
        }
        w[i] -= lr * gi;
    }
}

// ---- 8-bit optimizers (`cpu::optim8`): one block of 256 threads per quantization block -----------------

#define QUANT_BLOCK 256

// The code of `x` (a value divided by its block's absmax) in a codebook with ascending `mid`points: the
// count of midpoints below x, and a tie goes to the even code, as `Codebook::nearest_fast`. NaN is 0.
__device__ __forceinline__ unsigned char nearest_code(float x, const float* mid) {
    if (x != x) return 0;
    unsigned lo = 0, hi = 255;  // the count lies in [lo, hi]
    while (lo < hi) {
        unsigned m = (lo + hi) / 2;
        if (mid[m] < x) lo = m + 1; else hi = m;
    }
    if (lo < 255 && x == mid[lo] && (lo & 1u)) ++lo;
    return (unsigned char)lo;
}

// Largest magnitude in the block, NaN ignored and 0 for a block of NaNs (the CPU's fold of `f32::max`
// from 0), every thread getting it.
__device__ float block_absmax(float v, float* shared) {
    shared[threadIdx.x] = fmaxf(0.0f, fabsf(v));
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
        __syncthreads();
    }
    float r = shared[0];
    __syncthreads();
    return r;
}

// The code of this thread's value `v` in its block of absmax `absmax` (`cpu::quantize_block`); with
// `keep_sign`, a code whose entry has the other sign than v moves one step towards v's side.
__device__ __forceinline__ unsigned char quantize(float v, float absmax, const float* book, const float* mid,
                                                  unsigned char zero_code, bool keep_sign) {
    if (absmax == 0.0f) return zero_code;
    unsigned char code = nearest_code(v / absmax, mid);
    if (keep_sign && (signbit(book[code]) != 0) != (signbit(v) != 0)) code = v > 0.0f ? code + 1 : code - 1;
    return code;
}

// `book1`/`mid1`: the signed codebook (first moments), `book2`/`mid2`: the unsigned one.
extern "C" __global__ void adam8bit_step(float* w, const float* g, unsigned char* mc, float* ma, unsigned char* vc,
                                         float* va, const float* book1, const float* mid1, const float* book2,
                                         const float* mid2, u64 n, float beta1, float beta2, float step_size,
                                         float eps_hat, float l2, float decay) {
    __shared__ float shared[QUANT_BLOCK];
    u64 blocks = (n + QUANT_BLOCK - 1) / QUANT_BLOCK;
    for (u64 b = blockIdx.x; b < blocks; b += gridDim.x) {
        u64 e = b * QUANT_BLOCK + threadIdx.x;
        bool live = e < n;
        float mi = 0.0f, vi = 0.0f;
        if (live && isfinite(g[e])) {  // a NaN or infinite gradient: m = v = 0, w unchanged
            float wi = w[e];
            float gi = g[e] + l2 * wi;
            mi = book1[mc[e]] * ma[b] * beta1 + (1.0f - beta1) * gi;
            vi = book2[vc[e]] * va[b] * beta2 + (1.0f - beta2) * gi * gi;
            w[e] = (wi + step_size * (mi / (sqrtf(vi) + eps_hat))) * decay;
        }
        float m_absmax = block_absmax(mi, shared);  // every thread has read ma[b] and va[b] by now
        float v_absmax = block_absmax(vi, shared);
        if (live) {
            mc[e] = quantize(mi, m_absmax, book1, mid1, 127, true);
            vc[e] = quantize(vi, v_absmax, book2, mid2, 0, false);
        }
        if (threadIdx.x == 0) {
            ma[b] = m_absmax;
            va[b] = v_absmax;
        }
    }
}

// SGD with an 8-bit momentum buffer in the signed codebook; `damp` is 1 - dampening.
extern "C" __global__ void momentum8bit_step(float* w, const float* g, unsigned char* bc, float* ba,
                                             const float* book, const float* mid, u64 n, float lr, float wd,
                                             float mu, float damp, int first_step, int nesterov) {
    __shared__ float shared[QUANT_BLOCK];
    u64 blocks = (n + QUANT_BLOCK - 1) / QUANT_BLOCK;
    for (u64 b = blockIdx.x; b < blocks; b += gridDim.x) {
        u64 e = b * QUANT_BLOCK + threadIdx.x;
        bool live = e < n;
        float bi = 0.0f;
        if (live && isfinite(g[e])) {  // a NaN or infinite gradient: b = 0, w unchanged
            float gi = g[e] + wd * w[e];
            bi = first_step ? gi : mu * (book[bc[e]] * ba[b]) + damp * gi;
            float d = nesterov ? gi + mu * bi : bi;
            w[e] = w[e] - lr * d;
        }
        float absmax = block_absmax(bi, shared);
        if (live) bc[e] = quantize(bi, absmax, book, mid, 127, true);
        if (threadIdx.x == 0) ba[b] = absmax;
    }
}

// ---- update rounding of weights stored in bf16 or f16 (`cpu::rounding`) ---------------------------------

// SplitMix64's finalizer, and the 16 random bits of element `index` of update `counter` under `seed`, as
// `cpu::rounding_bits`.
__device__ __forceinline__ u64 mix(u64 z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ unsigned rounding_bits(u64 seed, u64 counter, u64 index) {
    u64 key = mix(seed ^ mix(counter + 0x9e3779b97f4a7c15ull));
    return (unsigned)(mix(key + index * 0x9e3779b97f4a7c15ull) >> 48);
}

// Stochastic rounding to bf16 in place: up one bf16 step with probability dropped / 2^16.
extern "C" __global__ void stochastic_round_bf16(float* v, u64 n, u64 seed, u64 counter) {
    GRID_STRIDE(i, n) {
        float x = v[i];
        if (!isfinite(x)) continue;
        unsigned bits = __float_as_uint(x), kept = bits & 0xffff0000u, dropped = bits & 0xffffu;
        v[i] = __uint_as_float(rounding_bits(seed, counter, i) < dropped ? kept + 0x10000u : kept);
    }
}

// Kahan-compensated rounding of updated weights `neu` (old values `old`) to T, carrying in `comp` what
// each rounding dropped, as `cpu::kahan_round_through`.
#define KAHAN(name, T, _) \
    extern "C" __global__ void kahan_round_##name(const float* old, float* neu, T* comp, u64 n) { \
        GRID_STRIDE(i, n) { \
            float o = old[i]; \
            float u = (neu[i] - o) + to_acc(comp[i]); \
            float stored = to_acc(convert<T>(o + u)); \
            comp[i] = convert<T>(isfinite(stored) ? u - (stored - o) : 0.0f); \
            neu[i] = stored; \
        } \
    }
KAHAN(bf16, bf16, _)
KAHAN(f16, f16, _)

// ---- indexing (indices are checked on the host before a launch) -----------------------------------------

// gather along the middle dimension of `d`: out[(o, t, i)] = x[(o, idx[(o, t, i)], i)], t < idx_size.
#define INDEX_MOVES(name, T) \
    extern "C" __global__ void gather_##name(Dim3 d, const T* x, const i64* idx, u64 idx_size, T* out) { \
        GRID_STRIDE(k, d.outer * idx_size * d.inner) { \
            u64 o = k / (idx_size * d.inner), i = k % d.inner; \
            out[k] = x[(o * d.size + (u64)idx[k]) * d.inner + i]; \
        } \
    } \
    extern "C" __global__ void index_select_##name(Dim3 d, const T* x, const i64* idx, u64 n_idx, T* out) { \
        GRID_STRIDE(k, d.outer * n_idx * d.inner) { \
            u64 o = k / (n_idx * d.inner), t = (k / d.inner) % n_idx, i = k % d.inner; \
            out[k] = x[(o * d.size + (u64)idx[t]) * d.inner + i]; \
        } \
    }
BIT_TYPES(INDEX_MOVES)

// The adjoints of gather and index_select add into `acc` (f32, f64 for f64), which the caller made from
// the output and casts back: atomics, so the order of additions (and the last bits) may vary by run.
#define INDEX_ADDS(name, T, _) \
    extern "C" __global__ void scatter_add_##name(Dim3 d, Acc<T>::type* acc, const i64* idx, u64 idx_size, const T* src) { \
        GRID_STRIDE(k, d.outer * idx_size * d.inner) { \
            u64 o = k / (idx_size * d.inner), i = k % d.inner; \
            atomicAdd(&acc[(o * d.size + (u64)idx[k]) * d.inner + i], to_acc(src[k])); \
        } \
    } \
    extern "C" __global__ void index_add_##name(Dim3 d, Acc<T>::type* acc, const i64* idx, u64 n_idx, const T* src) { \
        GRID_STRIDE(k, d.outer * n_idx * d.inner) { \
            u64 o = k / (n_idx * d.inner), t = (k / d.inner) % n_idx, i = k % d.inner; \
            atomicAdd(&acc[(o * d.size + (u64)idx[t]) * d.inner + i], to_acc(src[k])); \
        } \
    }
FLOAT_TYPES(INDEX_ADDS, _)

// ---- scans and arg reductions (one thread per (outer, inner) line) ------------------------------------

// Index of the first maximum (`max`) or minimum; NaN counts as the extreme, as the CPU kernel.
#define LINE_OPS(name, T, _) \
    extern "C" __global__ void arg_reduce_##name(int max, Dim3 d, const T* x, i64* out) { \
        typedef Acc<T>::type A; \
        GRID_STRIDE(o, d.outer * d.inner) { \
            u64 base = (o / d.inner) * d.size * d.inner + o % d.inner; \
            A best = to_acc(x[base]); \
            i64 at = 0; \
            for (u64 j = 1; j < d.size && best == best; ++j) { \
                A v = to_acc(x[base + j * d.inner]); \
                if (v != v || (max ? v > best : v < best)) { best = v; at = (i64)j; } \
            } \
            out[o] = at; \
        } \
    } \
    extern "C" __global__ void cumsum_##name(int reverse, Dim3 d, const T* x, T* out) { \
        typedef Acc<T>::type A; \
        GRID_STRIDE(o, d.outer * d.inner) { \
            u64 base = (o / d.inner) * d.size * d.inner + o % d.inner; \
            A s = (A)0; \
            for (u64 j = 0; j < d.size; ++j) { \
                u64 k = base + (reverse ? d.size - 1 - j : j) * d.inner; \
                s += to_acc(x[k]); \
                out[k] = convert<T>(s); \
            } \
        } \
    } \
    extern "C" __global__ void logsumexp_##name(Dim3 d, const T* x, Acc<T>::type* out) { \
        typedef Acc<T>::type A; \
        GRID_STRIDE(o, d.outer * d.inner) { \
            u64 base = (o / d.inner) * d.size * d.inner + o % d.inner; \
            A m = -(A)AMP_INF; \
            for (u64 j = 0; j < d.size; ++j) m = max_nan(m, to_acc(x[base + j * d.inner])); \
            if (isinf(m)) { out[o] = m; continue; } \
            A s = (A)0; \
            for (u64 j = 0; j < d.size; ++j) s += exp(to_acc(x[base + j * d.inner]) - m); \
            out[o] = m + log(s); \
        } \
    }
FLOAT_TYPES(LINE_OPS, _)

// ---- convolution columns (batched over `n` images) ----------------------------------------------------

struct ConvGeometry { u64 channels, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w; };

// cols[i][(c·kh + ky)·kw + kx][oy·ow + ox] = x[i][c][oy·sh + ky - ph][ox·sw + kx - pw], zero in the padding.
#define IM2COL(name, T) \
    extern "C" __global__ void im2col_##name(ConvGeometry g, u64 n, const T* x, T* cols) { \
        u64 per_image = g.channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w; \
        GRID_STRIDE(k, n * per_image) { \
            u64 img = k / per_image, r = k % per_image; \
            u64 ox = r % g.out_w, oy = (r / g.out_w) % g.out_h, tap = r / (g.out_w * g.out_h); \
            u64 kx = tap % g.kernel_w, ky = (tap / g.kernel_w) % g.kernel_h, c = tap / (g.kernel_w * g.kernel_h); \
            i64 y = (i64)(oy * g.stride_h + ky) - (i64)g.pad_h, xx = (i64)(ox * g.stride_w + kx) - (i64)g.pad_w; \
            T v; \
            memset(&v, 0, sizeof(T)); \
            if (y >= 0 && xx >= 0 && y < (i64)g.height && xx < (i64)g.width) \
                v = x[((img * g.channels + c) * g.height + (u64)y) * g.width + (u64)xx]; \
            cols[k] = v; \
        } \
    }
BIT_TYPES(IM2COL)

// The adjoint of im2col, gathered per input element (no atomics): the sum of the column entries that
// read it, in the arithmetic type, rounded once.
#define COL2IM(name, T, _) \
    extern "C" __global__ void col2im_##name(ConvGeometry g, u64 n, const T* cols, T* dx) { \
        typedef Acc<T>::type A; \
        u64 image = g.channels * g.height * g.width, per_cols = g.channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w; \
        GRID_STRIDE(k, n * image) { \
            u64 img = k / image, r = k % image; \
            u64 x = r % g.width, y = (r / g.width) % g.height, c = r / (g.width * g.height); \
            A s = (A)0; \
            for (u64 ky = 0; ky < g.kernel_h; ++ky) { \
                i64 sy = (i64)(y + g.pad_h) - (i64)ky; \
                if (sy < 0 || sy % (i64)g.stride_h != 0) continue; \
                u64 oy = (u64)sy / g.stride_h; \
                if (oy >= g.out_h) continue; \
                for (u64 kx = 0; kx < g.kernel_w; ++kx) { \
                    i64 sx = (i64)(x + g.pad_w) - (i64)kx; \
                    if (sx < 0 || sx % (i64)g.stride_w != 0) continue; \
                    u64 ox = (u64)sx / g.stride_w; \
                    if (ox >= g.out_w) continue; \
                    u64 row = (c * g.kernel_h + ky) * g.kernel_w + kx; \
                    s += to_acc(cols[img * per_cols + (row * g.out_h + oy) * g.out_w + ox]); \
                } \
            } \
            dx[k] = convert<T>(s); \
        } \
    }
FLOAT_TYPES(COL2IM, _)
