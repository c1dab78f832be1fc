// pi2lab's quantized kernels (quant.cc): the instruction set their row functions use.
#pragma once

#include "common.h"

namespace pi2lab {

// The instruction set the quantized kernels run: "avx512vnni", "avx2" or "portable".
const char* IsaName();

// One FFN's contribution out [D] for x [D] from flash-layout units in place: unit i's bytes
// are row rows[i] of src [*, stride] (C neurons, each its gate, up and down rows of d weights
// at `bits`), its scales those of unit units[i] in scales [F, 3, D/32] float16. Silent
// neurons' down rows are not read.
void BundleFfn(const float* x, int64_t d, const uint8_t* src, int64_t stride,
               const int64_t* rows, const int64_t* units, int64_t n, int64_t cluster,
               const uint16_t* scales, int bits, int32_t kind, float threshold, float* out);

// Switches the quantized kernels to `name` if this CPU supports it; false otherwise.
bool SetIsa(const char* name);

}  // namespace pi2lab
