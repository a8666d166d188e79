// What NVRTC provides to `kernels.cu`, for compiling it as ordinary C++ on the host: the CUDA keywords,
// the thread coordinates, `__syncthreads`, and the intrinsics the kernels call. The emulated driver
// (`driver.cpp`) runs each block's threads as fibers on one host thread, so atomics are plain updates and
// `__shared__` arrays are statics (one block runs at a time).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

using std::erf;
using std::exp;
using std::expm1;
using std::fabs;
using std::isfinite;
using std::isinf;
using std::log;
using std::log1p;
using std::pow;
using std::signbit;
using std::sqrt;
using std::tanh;

#define AMP_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct amp_dim3 {
    unsigned x, y, z;
};
extern amp_dim3 threadIdx, blockIdx, blockDim, gridDim;

// Suspends this thread until every thread of its block has reached the same barrier.
void __syncthreads();

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline double __longlong_as_double(long long i) {
    double d;
    std::memcpy(&d, &i, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long i;
    std::memcpy(&i, &d, 8);
    return i;
}

// Round toward zero: the nearest value, stepped once toward zero if rounding went away from it.
inline float __double2float_rz(double d) {
    float r = (float)d;
    if (std::isnan(d)) return r;
    if (std::fabs((double)r) > std::fabs(d)) r = std::nextafter(r, 0.0f);
    return r;
}
inline double __ll2double_rz(long long i) {
    double r = (double)i;
    // (double)i is exact or rounded to nearest; compare in 128-bit integers to see which way it went.
    __int128 back = (__int128)r;
    if ((back > (__int128)i && i >= 0) || (back < (__int128)i && i < 0)) r = std::nextafter(r, 0.0);
    return r;
}
inline float __ll2float_rn(long long i) { return (float)i; }
inline double __ll2double_rn(long long i) { return (double)i; }

// PTX cvt.rzi.s64: truncation, saturating at the i64 range, NaN to 0.
template <class F> inline long long amp_to_i64_rz(F x) {
    if (std::isnan(x)) return 0;
    if (x >= (F)9.2233720368547758e18) return std::numeric_limits<long long>::max();
    if (x <= (F)-9.2233720368547758e18) return std::numeric_limits<long long>::min();
    return (long long)x;
}
inline long long __float2ll_rz(float x) { return amp_to_i64_rz(x); }
inline long long __double2ll_rz(double x) { return amp_to_i64_rz(x); }

inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double* p, double v) {
    double old = *p;
    *p = old + v;
    return old;
}
inline int atomicOr(int* p, int v) {
    int old = *p;
    *p = old | v;
    return old;
}

// IEEE binary16 conversions (PTX cvt.f32.f16, cvt.rn.f16.f32, cvt.rn.f16.f64): exact widening, and
// rounding to nearest even in one step from either width. A NaN becomes the canonical 0x7fff.
inline float amp_f16_bits_to_float(unsigned short h) {
    unsigned sign = (unsigned)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    unsigned bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        float f = (float)mantissa * 5.9604644775390625e-8f;  // mantissa · 2^-24, exact
        return sign ? -f : f;
    }
    return __uint_as_float(bits);
}
inline unsigned short amp_double_to_f16_bits(double d) {
    unsigned short sign = std::signbit(d) ? 0x8000 : 0;
    if (std::isnan(d)) return 0x7fff;
    double a = std::fabs(d);
    if (a >= 65520.0) return sign | 0x7c00;  // rounds to infinity (65504 + half an ulp)
    if (a == 0) return sign;
    int e;
    std::frexp(a, &e);  // a = m · 2^e, m in [0.5, 1)
    // Quantum of the result: 2^(e-11) for normals (11 significant bits), 2^-24 for subnormals.
    int q = e - 11 < -24 ? -24 : e - 11;
    double scaled = std::ldexp(a, -q);       // exact (a power-of-two scaling)
    double r = std::nearbyint(scaled);       // round half to even (default rounding mode)
    double v = std::ldexp(r, q);
    // v is representable: encode it.
    int ev;
    double mv = std::frexp(v, &ev);
    if (v == 0) return sign;
    if (ev - 1 < -14) {  // subnormal: v = k · 2^-24
        return sign | (unsigned short)std::ldexp(v, 24);
    }
    unsigned exponent = (unsigned)(ev - 1 + 15);
    unsigned mantissa = (unsigned)std::ldexp(mv * 2.0 - 1.0, 10);
    if (exponent >= 31) return sign | 0x7c00;
    return sign | (unsigned short)(exponent << 10) | (unsigned short)mantissa;
}
inline unsigned short amp_float_to_f16_bits(float f) {
    if (std::isinf(f)) return f < 0 ? 0xfc00 : 0x7c00;
    return amp_double_to_f16_bits((double)f);
}
