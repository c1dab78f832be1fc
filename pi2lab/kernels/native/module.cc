// The Python module pi2lab._native: hands the XLA FFI handlers to jax.ffi.register_ffi_target
// and says which instruction set and how many threads the kernels use.

#include <Python.h>

#include "quant.h"
#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labSparseFfnF32);
XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labQDot);
XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labQAxpy);
XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labQSparseFfn);

static PyObject* Handlers(PyObject*, PyObject*) {
  const std::pair<const char*, void*> targets[] = {
      {"pi2lab_sparse_ffn_f32", reinterpret_cast<void*>(Pi2labSparseFfnF32)},
      {"pi2lab_qdot", reinterpret_cast<void*>(Pi2labQDot)},
      {"pi2lab_qaxpy", reinterpret_cast<void*>(Pi2labQAxpy)},
      {"pi2lab_qsparse_ffn", reinterpret_cast<void*>(Pi2labQSparseFfn)},
  };
  PyObject* out = PyDict_New();
  for (const auto& [name, fn] : targets) {
    PyObject* cap = PyCapsule_New(fn, nullptr, nullptr);
    PyDict_SetItemString(out, name, cap);
    Py_DECREF(cap);
  }
  return out;
}

static PyObject* Describe(PyObject*, PyObject*) {
  __builtin_cpu_init();
  const char* isa = __builtin_cpu_supports("avx512f")   ? "avx512f"
                    : __builtin_cpu_supports("avx2") ? "avx2+fma"
                                                     : "portable";
  return Py_BuildValue("{s:s,s:s,s:i}", "isa", isa, "quant_isa", pi2lab::IsaName(), "threads",
                       pi2lab::GlobalPool().size());
}

static PyObject* SetIsa(PyObject*, PyObject* args) {
  const char* name;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  return PyBool_FromLong(pi2lab::SetIsa(name));
}

// A C-contiguous buffer of `itemsize` bytes per element, or NULL with a Python error set.
struct View {
  Py_buffer buf{};
  bool ok = false;
  View(PyObject* obj, Py_ssize_t itemsize, bool writable, const char* what) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &buf, flags) != 0) return;
    ok = buf.itemsize == itemsize;
    if (!ok) PyErr_Format(PyExc_ValueError, "%s: expected %zd-byte elements", what, itemsize);
  }
  ~View() {
    if (buf.obj != nullptr) PyBuffer_Release(&buf);
  }
  Py_ssize_t count() const { return buf.len / buf.itemsize; }
};

static PyObject* FfnBundles(PyObject*, PyObject* args) {
  PyObject *out_o, *x_o, *src_o, *rows_o, *units_o, *scales_o;
  long long stride, cluster;
  int bits, kind;
  float threshold;
  if (!PyArg_ParseTuple(args, "OOOLOOOLiif", &out_o, &x_o, &src_o, &stride, &rows_o, &units_o,
                        &scales_o, &cluster, &bits, &kind, &threshold)) {
    return nullptr;
  }
  View out(out_o, 4, true, "out"), x(x_o, 4, false, "x"), src(src_o, 1, false, "src"),
      rows(rows_o, 8, false, "rows"), units(units_o, 8, false, "units"),
      scales(scales_o, 2, false, "scales");
  if (!(out.ok && x.ok && src.ok && rows.ok && units.ok && scales.ok)) return nullptr;
  const int64_t d = x.count(), n = rows.count();
  if (out.count() != d || units.count() != n || (bits != 8 && bits != 4) || d % 32 ||
      cluster < 1 || stride < cluster * 3 * d * bits / 8) {
    PyErr_SetString(PyExc_ValueError, "ffn_bundles: operands disagree in size");
    return nullptr;
  }
  const auto* r = static_cast<const int64_t*>(rows.buf.buf);
  const auto* u = static_cast<const int64_t*>(units.buf.buf);
  const int64_t slots = src.count() / stride, scale_units = scales.count() / (3 * d / 32) / cluster;
  for (int64_t i = 0; i < n; ++i) {
    if (r[i] < 0 || r[i] >= slots || u[i] < 0 || u[i] >= scale_units) {
      PyErr_SetString(PyExc_IndexError, "ffn_bundles: a row or unit is out of range");
      return nullptr;
    }
  }
  Py_BEGIN_ALLOW_THREADS;
  pi2lab::BundleFfn(static_cast<const float*>(x.buf.buf), d,
                    static_cast<const uint8_t*>(src.buf.buf), stride, r, u, n, cluster,
                    static_cast<const uint16_t*>(scales.buf.buf), bits, kind, threshold,
                    static_cast<float*>(out.buf.buf));
  Py_END_ALLOW_THREADS;
  Py_RETURN_NONE;
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handlers by target name (PyCapsules)."},
    {"describe", Describe, METH_NOARGS, "The instruction sets the kernels run and the pool size."},
    {"ffn_bundles", FfnBundles, METH_VARARGS,
     "ffn_bundles(out, x, src, stride, rows, units, scales, cluster, bits, kind, threshold): "
     "one FFN's output from quantized flash-layout units in place (see quant.h)."},
    {"set_isa", SetIsa, METH_VARARGS,
     "Runs the quantized kernels on the named instruction set (avx512vnni, avx2, portable) "
     "if this CPU has it; returns whether it does."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_native",
                              "pi2lab's native CPU kernels (XLA FFI handlers).", -1, kMethods};

PyMODINIT_FUNC PyInit__native() { return PyModule_Create(&kModule); }
