// pi2lab's quantized kernels (quant.cc): the instruction set their row functions use.
#pragma once

#include "common.h"

namespace pi2lab {

// The instruction set the quantized kernels run: "avx512vnni", "avx2" or "portable".
const char* IsaName();

// Switches the quantized kernels to `name` if this CPU supports it; false otherwise.
bool SetIsa(const char* name);

}  // namespace pi2lab
