//! TensorRT FFI. Empty until the TensorRT issue lands; see ARCHITECTURE.md.
