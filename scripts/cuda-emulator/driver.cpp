// An emulated CUDA driver (`libcuda.so`) for machines without a GPU: the driver calls the CUDA backend
// makes, over host memory, with amp's kernels compiled for the host (`kernels_host.cpp`). A device
// pointer is a host address; every call completes before it returns, so streams need no ordering. Every
// buffer ends at an inaccessible page, so an access past its end faults, and the fault names the kernel.
//
// A launch runs its grid one block at a time, and a block's threads as fibers on the calling thread:
// each thread runs until it reaches `__syncthreads` or ends, then the next one runs, so a barrier holds
// when the last thread reaches it. One launch runs at a time (a mutex), which also makes the kernels'
// atomics and `__shared__` statics correct.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "registry.h"

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUmodule;
typedef void* CUstream;

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

amp_dim3 threadIdx, blockIdx, blockDim, gridDim;

// ---- fibers -------------------------------------------------------------------------------------------

// Saves the callee-saved registers and the stack pointer into *from, and resumes the fiber whose stack
// pointer is `to` (System V x86-64).
extern "C" void amp_fiber_switch(void** from, void* to);
asm(R"(
    .text
    .globl amp_fiber_switch
    .type amp_fiber_switch, @function
amp_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size amp_fiber_switch, .-amp_fiber_switch
)");

namespace {

const size_t STACK_BYTES = 128 * 1024;
const size_t GUARD_BYTES = 4096;

// A fiber's stack, with an inaccessible page below it: an overflow faults instead of overwriting memory.
struct Fiber {
    unsigned char* stack = nullptr;
    void* sp = nullptr;
    bool done = false;

    Fiber() {
        void* p = mmap(nullptr, GUARD_BYTES + STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED) std::abort();
        mprotect(p, GUARD_BYTES, PROT_NONE);
        stack = (unsigned char*)p + GUARD_BYTES;
    }
    Fiber(const Fiber&) = delete;
    Fiber& operator=(const Fiber&) = delete;
};

std::vector<std::unique_ptr<Fiber>> fibers;
void* scheduler_sp = nullptr;
unsigned current = 0;
const KernelEntry* running = nullptr;
void** running_params = nullptr;

void fiber_main() {
    running->invoke(running_params);
    fibers[current]->done = true;
    amp_fiber_switch(&fibers[current]->sp, scheduler_sp);
    std::abort();  // a finished fiber is never resumed
}

// A fresh stack whose first switch enters `fiber_main` (16-byte aligned at the call, as the ABI wants).
void start_fiber(Fiber& f) {
    uintptr_t top = (uintptr_t)(f.stack + STACK_BYTES) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;                      // fiber_main's return address (never used)
    *--sp = (void*)&fiber_main;           // where `ret` goes on the first switch
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    f.sp = sp;
    f.done = false;
}

// The order threads run in between barriers: ascending, or descending when AMP_EMULATOR_ORDER=reverse. A
// kernel that reads another thread's write without a barrier between them sees the old value in one order
// or the other, so CI runs the device tests in both.
bool reverse_order() {
    static const bool reverse = [] {
        const char* order = std::getenv("AMP_EMULATOR_ORDER");
        return order && std::strcmp(order, "reverse") == 0;
    }();
    return reverse;
}

void run_block(unsigned threads) {
    while (fibers.size() < threads) fibers.push_back(std::make_unique<Fiber>());
    for (unsigned t = 0; t < threads; ++t) start_fiber(*fibers[t]);
    unsigned live = threads;
    while (live > 0) {
        live = 0;
        for (unsigned i = 0; i < threads; ++i) {
            unsigned t = reverse_order() ? threads - 1 - i : i;
            if (fibers[t]->done) continue;
            current = t;
            threadIdx = {t, 0, 0};
            amp_fiber_switch(&scheduler_sp, fibers[t]->sp);
            if (!fibers[t]->done) ++live;
        }
    }
}

std::mutex launch_mutex;

const char* error_name(CUresult r) {
    switch (r) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        default: return "CUDA_ERROR_NOT_SUPPORTED";
    }
}

const size_t PAGE = 4096;
std::mutex alloc_mutex;
// Each buffer's start -> its mapping (base, length), for freeing.
std::map<uintptr_t, std::pair<void*, size_t>> mappings;

// The kernel running now (for the fault message), and the handler the fault handler stands in front of.
const char* volatile running_name = nullptr;
struct sigaction previous_segv;

void write_text(const char* text) {
    ssize_t ignored = write(2, text, std::strlen(text));
    (void)ignored;
}

// A fault inside a launch is reported with the kernel's name; any other goes to the handler before this
// one (the Rust runtime's, which reports stack overflows).
void on_fault(int sig, siginfo_t* info, void* context) {
    const char* name = running_name;
    if (name) {
        write_text("emulated GPU: kernel ");
        write_text(name);
        write_text(" touched memory outside its buffers (or overflowed its thread's stack)\n");
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (previous_segv.sa_flags & SA_SIGINFO) {
        previous_segv.sa_sigaction(sig, info, context);
    } else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN) {
        previous_segv.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction action;
        std::memset(&action, 0, sizeof action);
        action.sa_sigaction = on_fault;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        sigaction(SIGSEGV, &action, &previous_segv);
    });
}

// The emulated device: compute capability 9.0 (the architecture the backend compiles for here).
const int DEVICE_COUNT = 1;
// The one context and the one module (every kernel is in it): only their addresses are used.
int context_marker;
int module_marker;

}  // namespace

void __syncthreads() { amp_fiber_switch(&fibers[current]->sp, scheduler_sp); }

extern "C" {

CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* version) {
    *version = 13000;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* count) {
    *count = DEVICE_COUNT;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (ordinal < 0 || ordinal >= DEVICE_COUNT) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice) {
    switch (attribute) {
        case 1: *value = 1024; break;    // max threads per block
        case 2: *value = 1024; break;    // max block dim x
        case 5: *value = 2147483647; break;  // max grid dim x
        case 16: *value = 132; break;    // multiprocessors
        case 75: *value = 9; break;      // compute capability major
        case 76: *value = 0; break;      // compute capability minor
        default: *value = 0; break;      // memory pools (115) and everything else: not supported
    }
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::snprintf(name, (size_t)len, "amp emulated device (host CPU)");
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = (size_t)16 << 30;
    return CUDA_SUCCESS;
}
CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    *free = *total = (size_t)16 << 30;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice) {
    *context = &context_marker;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext* context) {
    *context = &context_marker;
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
CUresult cuGetErrorString(CUresult r, const char** text) {
    *text = error_name(r);
    return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult r, const char** text) {
    *text = error_name(r);
    return CUDA_SUCCESS;
}

// Each allocation ends exactly where an inaccessible page begins, so a kernel (or copy) that reads or
// writes one byte past a buffer faults at once; the fault handler names the kernel that was running.
CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
    install_fault_handler();
    size_t body = (bytes + PAGE - 1) / PAGE * PAGE;
    if (body == 0) body = PAGE;
    void* base = mmap(nullptr, body + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    mprotect((char*)base + body, PAGE, PROT_NONE);
    // The start keeps the alignment of every element type: the size is a whole number of elements.
    char* start = (char*)base + body - bytes;
    // Fresh device memory holds garbage, not zeros: a kernel that reads before writing shows up.
    std::memset(start, 0xa5, bytes);
    {
        std::lock_guard<std::mutex> lock(alloc_mutex);
        mappings[(uintptr_t)start] = {base, body + PAGE};
    }
    *ptr = (CUdeviceptr)start;
    return CUDA_SUCCESS;
}
CUresult cuMemFree_v2(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> lock(alloc_mutex);
    auto found = mappings.find((uintptr_t)ptr);
    if (found == mappings.end()) return CUDA_ERROR_INVALID_VALUE;
    munmap(found->second.first, found->second.second);
    mappings.erase(found);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
    std::memset((void*)dst, value, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream) {
    return cuMemsetD8_v2(dst, value, n);
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    std::memcpy((void*)dst, src, n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream) {
    return cuMemcpyHtoD_v2(dst, src, n);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    std::memcpy(dst, (const void*)src, n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream) {
    return cuMemcpyDtoH_v2(dst, src, n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    std::memmove((void*)dst, (const void*)src, n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) {
    return cuMemcpyDtoD_v2(dst, src, n);
}

CUresult cuModuleLoadData(CUmodule* module, const void*) {
    *module = &module_marker;
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(CUmodule) {
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(const KernelEntry** function, CUmodule, const char* name) {
    const KernelEntry* entry = find_kernel(name);
    if (!entry) return CUDA_ERROR_NOT_FOUND;
    *function = entry;
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(const KernelEntry* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned, CUstream, void** params, void** extra) {
    if (!f || extra || gy != 1 || gz != 1 || by != 1 || bz != 1 || gx == 0 || bx == 0 || bx > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(launch_mutex);
    running = f;
    running_params = params;
    running_name = f->name;
    gridDim = {gx, 1, 1};
    blockDim = {bx, 1, 1};
    for (unsigned b = 0; b < gx; ++b) {
        blockIdx = {b, 0, 0};
        run_block(bx);
    }
    running_name = nullptr;
    return CUDA_SUCCESS;
}

}  // extern "C"
