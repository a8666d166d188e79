// amp's kernels compiled for the host, by name, each with a function that calls it with the arguments of
// a `cuLaunchKernel` parameter array (one pointer to each argument's value).
#pragma once

#include "host_prelude.h"

struct KernelEntry {
    const char* name;
    void (*invoke)(void** params);
};

// The kernel `name`, or null.
const KernelEntry* find_kernel(const char* name);
