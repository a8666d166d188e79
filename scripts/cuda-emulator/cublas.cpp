// An emulated cuBLAS (`libcublas.so`) for the emulated driver: the handle calls the CUDA backend makes,
// and `GemmEx` / `GemmStridedBatchedEx` as plain loops with cuBLAS's semantics (column-major operands,
// transposes as flags, leading dimensions, alpha and beta read from host memory in the compute type),
// accumulating in the compute type and rounding once to C's type.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "host_prelude.h"

typedef int cublasStatus_t;
enum : int { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum : int { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum : int { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_64F = 70 };

namespace {

struct Handle {
    int math_mode;
};

// Element `i` of a buffer of cuBLAS type `type`, widened exactly.
double load(const void* data, int type, int64_t i) {
    switch (type) {
        case CUDA_R_32F: return ((const float*)data)[i];
        case CUDA_R_64F: return ((const double*)data)[i];
        case CUDA_R_16F: return amp_f16_bits_to_float(((const unsigned short*)data)[i]);
        default: return __uint_as_float((unsigned)((const unsigned short*)data)[i] << 16);
    }
}

// bf16 from f32, to nearest even (NaN stays NaN), as the kernels' own conversion.
unsigned short to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    unsigned round = 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)((u + round) >> 16);
}

void store(void* data, int type, int64_t i, double v) {
    switch (type) {
        case CUDA_R_32F: ((float*)data)[i] = (float)v; break;
        case CUDA_R_64F: ((double*)data)[i] = v; break;
        case CUDA_R_16F: ((unsigned short*)data)[i] = amp_float_to_f16_bits((float)v); break;
        default: ((unsigned short*)data)[i] = to_bf16((float)v); break;
    }
}

bool known_type(int t) { return t == CUDA_R_32F || t == CUDA_R_64F || t == CUDA_R_16F || t == CUDA_R_16BF; }

// C (m × n, column-major, ldc) = alpha · op(A) · op(B) + beta · C for one product.
template <class Acc>
void product(int transa, int transb, int m, int n, int k, Acc alpha, const void* a, int a_type, int64_t lda,
             const void* b, int b_type, int64_t ldb, Acc beta, void* c, int c_type, int64_t ldc) {
    for (int j = 0; j < n; ++j) {
        for (int i = 0; i < m; ++i) {
            Acc sum = 0;
            for (int p = 0; p < k; ++p) {
                int64_t ai = transa ? (int64_t)i * lda + p : (int64_t)p * lda + i;
                int64_t bi = transb ? (int64_t)p * ldb + j : (int64_t)j * ldb + p;
                sum += (Acc)load(a, a_type, ai) * (Acc)load(b, b_type, bi);
            }
            int64_t ci = (int64_t)j * ldc + i;
            Acc out = alpha * sum;
            // beta = 0 does not read C (it may hold garbage, NaN included), as cuBLAS.
            if (beta != 0) out += beta * (Acc)load(c, c_type, ci);
            store(c, c_type, ci, (double)out);
        }
    }
}

cublasStatus_t gemm(int transa, int transb, int m, int n, int k, const void* alpha, const void* a, int a_type,
                    int lda, int64_t stride_a, const void* b, int b_type, int ldb, int64_t stride_b,
                    const void* beta, void* c, int c_type, int ldc, int64_t stride_c, int batch, int compute) {
    if (!known_type(a_type) || !known_type(b_type) || !known_type(c_type)) return CUBLAS_STATUS_NOT_SUPPORTED;
    // What cuBLAS itself accepts: A and B of one type; f64 operands, output and compute together.
    bool f64 = a_type == CUDA_R_64F;
    if (b_type != a_type || (c_type == CUDA_R_64F) != f64 || (compute == CUBLAS_COMPUTE_64F) != f64)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < (transa ? k : m) || ldb < (transb ? n : k) || ldc < m || lda < 1 || ldb < 1 || ldc < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    size_t a_size = a_type == CUDA_R_32F ? 4 : a_type == CUDA_R_64F ? 8 : 2;
    size_t b_size = b_type == CUDA_R_32F ? 4 : b_type == CUDA_R_64F ? 8 : 2;
    size_t c_size = c_type == CUDA_R_32F ? 4 : c_type == CUDA_R_64F ? 8 : 2;
    for (int q = 0; q < batch; ++q) {
        const char* aq = (const char*)a + (size_t)(stride_a * q) * a_size;
        const char* bq = (const char*)b + (size_t)(stride_b * q) * b_size;
        char* cq = (char*)c + (size_t)(stride_c * q) * c_size;
        if (compute == CUBLAS_COMPUTE_64F) {
            product<double>(transa, transb, m, n, k, *(const double*)alpha, aq, a_type, lda, bq, b_type, ldb,
                            *(const double*)beta, cq, c_type, ldc);
        } else if (compute == CUBLAS_COMPUTE_32F) {
            product<float>(transa, transb, m, n, k, *(const float*)alpha, aq, a_type, lda, bq, b_type, ldb,
                           *(const float*)beta, cq, c_type, ldc);
        } else {
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(Handle** handle) {
    *handle = new Handle{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(Handle* handle) {
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(Handle*, void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(Handle* handle, int mode) {
    handle->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(Handle* handle, int* mode) {
    *mode = handle->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(Handle*, int transa, int transb, int m, int n, int k, const void* alpha, const void* a,
                            int a_type, int lda, const void* b, int b_type, int ldb, const void* beta, void* c,
                            int c_type, int ldc, int compute, int) {
    return gemm(transa, transb, m, n, k, alpha, a, a_type, lda, 0, b, b_type, ldb, 0, beta, c, c_type, ldc, 0, 1,
                compute);
}

cublasStatus_t cublasGemmStridedBatchedEx(Handle*, int transa, int transb, int m, int n, int k, const void* alpha,
                                          const void* a, int a_type, int lda, long long stride_a, const void* b,
                                          int b_type, int ldb, long long stride_b, const void* beta, void* c,
                                          int c_type, int ldc, long long stride_c, int batch, int compute, int) {
    return gemm(transa, transb, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type, ldb, stride_b, beta, c, c_type,
                ldc, stride_c, batch, compute);
}

cublasStatus_t cublasSgemm_v2(Handle*, int transa, int transb, int m, int n, int k, const float* alpha, const float* a,
                              int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
    return gemm(transa, transb, m, n, k, alpha, a, CUDA_R_32F, lda, 0, b, CUDA_R_32F, ldb, 0, beta, c, CUDA_R_32F,
                ldc, 0, 1, CUBLAS_COMPUTE_32F);
}

cublasStatus_t cublasDgemm_v2(Handle*, int transa, int transb, int m, int n, int k, const double* alpha,
                              const double* a, int lda, const double* b, int ldb, const double* beta, double* c,
                              int ldc) {
    return gemm(transa, transb, m, n, k, alpha, a, CUDA_R_64F, lda, 0, b, CUDA_R_64F, ldb, 0, beta, c, CUDA_R_64F,
                ldc, 0, 1, CUBLAS_COMPUTE_64F);
}

}  // extern "C"
