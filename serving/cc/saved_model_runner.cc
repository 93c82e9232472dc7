// Loads a SavedModel the way TF Serving does and runs its signatures the way TF
// Serving's Predict does, with TensorFlow's own C++ API (the one tensorflow_model_server
// links): `tensorflow::LoadSavedModel` with the "serve" tag (the restore op, the init
// op, the assets), then per call `Tensor::FromProto` on each input and `Session::Run`
// on the signature's tensor names. Built and run by `serving/cc_loader.py`.
//
// usage: saved_model_runner EXPORT_DIR CALLS_FILE
//   CALLS_FILE holds one call a line: `SIGNATURE OUT_PREFIX INPUT=PATH ...`, each PATH a
//   serialized tensorflow.TensorProto. For each output alias of the signature the call
//   writes OUT_PREFIX.<alias>.pb (a serialized TensorProto) and OUT_PREFIX.micros (the
//   wall time of its Session::Run); a call that fails writes OUT_PREFIX.error (the
//   status) instead, and the next call runs.
// Exit status: 0 after all calls, 2 on bad usage, 3 when the model does not load.

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor.pb.h"

namespace {

bool ReadFile(const std::string& path, std::string* contents) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *contents = buffer.str();
  return true;
}

bool WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  return static_cast<bool>(out);
}

// Runs one call; returns its error, empty when it succeeded.
std::string RunCall(const tensorflow::SavedModelBundle& bundle,
                    const std::string& signature_name, const std::string& out_prefix,
                    const std::vector<std::string>& inputs) {
  const auto& signatures = bundle.meta_graph_def.signature_def();
  auto found = signatures.find(signature_name);
  if (found == signatures.end()) return "no signature " + signature_name;
  const tensorflow::SignatureDef& signature = found->second;
  std::vector<std::pair<std::string, tensorflow::Tensor>> feeds;
  for (const std::string& input : inputs) {
    const size_t eq = input.find('=');
    if (eq == std::string::npos) return "input without '=': " + input;
    const std::string alias = input.substr(0, eq);
    auto info = signature.inputs().find(alias);
    if (info == signature.inputs().end()) return "signature has no input " + alias;
    std::string serialized;
    if (!ReadFile(input.substr(eq + 1), &serialized)) {
      return "cannot read " + input.substr(eq + 1);
    }
    tensorflow::TensorProto proto;
    tensorflow::Tensor tensor;
    if (!proto.ParseFromString(serialized) || !tensor.FromProto(proto)) {
      return "input " + alias + " is not a valid TensorProto";
    }
    feeds.emplace_back(info->second.name(), std::move(tensor));
  }
  std::vector<std::string> aliases, fetches;
  for (const auto& output : signature.outputs()) {
    aliases.push_back(output.first);
    fetches.push_back(output.second.name());
  }
  std::vector<tensorflow::Tensor> outputs;
  const auto start = std::chrono::steady_clock::now();
  const tensorflow::Status status =
      bundle.session->Run(feeds, fetches, /*target_node_names=*/{}, &outputs);
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start).count();
  if (!status.ok()) return status.ToString();
  WriteFile(out_prefix + ".micros", std::to_string(micros));
  for (size_t i = 0; i < aliases.size(); ++i) {
    tensorflow::TensorProto proto;
    outputs[i].AsProtoTensorContent(&proto);
    if (!WriteFile(out_prefix + "." + aliases[i] + ".pb", proto.SerializeAsString())) {
      return "cannot write " + out_prefix + "." + aliases[i] + ".pb";
    }
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " EXPORT_DIR CALLS_FILE\n";
    return 2;
  }
  tensorflow::SessionOptions session_options;
  tensorflow::RunOptions run_options;
  tensorflow::SavedModelBundle bundle;
  const tensorflow::Status loaded = tensorflow::LoadSavedModel(
      session_options, run_options, argv[1], {"serve"}, &bundle);
  if (!loaded.ok()) {
    std::cerr << "LoadSavedModel failed: " << loaded.ToString() << "\n";
    return 3;
  }
  std::ifstream calls(argv[2]);
  if (!calls) {
    std::cerr << "cannot read " << argv[2] << "\n";
    return 2;
  }
  std::string line;
  while (std::getline(calls, line)) {
    std::istringstream words(line);
    std::string signature_name, out_prefix, input;
    if (!(words >> signature_name >> out_prefix)) continue;
    std::vector<std::string> inputs;
    while (words >> input) inputs.push_back(input);
    const std::string error = RunCall(bundle, signature_name, out_prefix, inputs);
    if (!error.empty()) WriteFile(out_prefix + ".error", error);
  }
  return 0;
}
