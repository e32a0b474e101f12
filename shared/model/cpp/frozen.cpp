// A frozen TorchScript module for inference, the C++ half of `src/frozen.rs`.
//
// tch can load and run TorchScript but cannot freeze it. Freezing inlines the weights as
// constants, which lets libtorch fold each BatchNorm into its convolution and fuse the
// activations: the same features (to ~1e-5) for far fewer passes over memory; on CPU,
// optimize_for_inference then moves the convolutions to oneDNN's blocked layouts. Errors cross
// the C boundary as malloc'd strings, never as exceptions.
#include <torch/script.h>
#include <torch/csrc/jit/api/module.h>

#include <cstring>
#include <string>

namespace {
char* copy_message(const std::exception& e) { return strdup(e.what()); }
}  // namespace

extern "C" {

// Loads `path` on the device (`cuda_index` < 0: CPU), sets eval mode and freezes it; with
// `optimize`, also runs libtorch's optimize_for_inference passes (on CPU: oneDNN weight
// layouts and fused convolutions). Null + *err on failure.
void* aerial_jit_load_frozen(const char* path, int cuda_index, int optimize, char** err) {
  try {
    c10::Device device = cuda_index < 0 ? c10::Device(c10::kCPU)
                                        : c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(cuda_index));
    torch::jit::Module m = torch::jit::load(std::string(path), device);
    m.eval();
    torch::jit::Module frozen = torch::jit::freeze(m);
    if (optimize) {
      frozen = torch::jit::optimize_for_inference(frozen);
    }
    return new torch::jit::Module(std::move(frozen));
  } catch (const std::exception& e) {
    *err = copy_message(e);
    return nullptr;
  }
}

// Runs `forward` on one input tensor without autograd; returns a new tensor owned by the
// caller. Null + *err on failure.
at::Tensor* aerial_jit_forward(void* module, const at::Tensor* input, char** err) {
  try {
    c10::InferenceMode guard;
    auto* m = static_cast<torch::jit::Module*>(module);
    at::Tensor y = m->forward({*input}).toTensor();
    return new at::Tensor(std::move(y));
  } catch (const std::exception& e) {
    *err = copy_message(e);
    return nullptr;
  }
}

void aerial_jit_free(void* module) { delete static_cast<torch::jit::Module*>(module); }

void aerial_jit_free_error(char* err) { free(err); }

}  // extern "C"
