// Standalone Verilator driver of lutforge_sim_top: the same model and GEMM as the cocotb
// bench, with no cocotb and no VPI, to measure raw simulation speed.
//
// Verilator spells the double underscore of Amaranth port names "___05F".
// Usage: Vraw +memload=FILE +memdump=FILE +cmd=HEX +dump_first=N +dump_words=N +max_cycles=N
// Prints one JSON line: {"cycles": simulated cycles until done, "seconds": wall time}.
#include "Vraw.h"
#include "verilated.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static std::string plusarg(int argc, char** argv, const char* name) {
    std::string prefix = std::string("+") + name + "=";
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return argv[i] + prefix.size();
    return "";
}

int main(int argc, char** argv) {
    VerilatedContext ctx;
    ctx.commandArgs(argc, argv);
    Vraw top{&ctx};
    auto tick = [&]() {
        top.clk = 0; top.eval();
        top.clk = 1; top.eval();
    };
    top.rst = 1; top.cmd___05Fvalid = 0; top.backdoor_load = 0; top.backdoor_dump = 0;
    for (int i = 0; i < 4; ++i) tick();
    top.rst = 0;
    tick();
    top.backdoor_load = 1; tick(); top.backdoor_load = 0;

    // The command payload is a wide port: fill its 32-bit words from the hex string.
    std::string hex = plusarg(argc, argv, "cmd");
    const int nwords = sizeof(top.cmd___05Fpayload) / sizeof(top.cmd___05Fpayload[0]);
    for (int w = 0; w < nwords; ++w) {
        int end = (int)hex.size() - 8 * w;
        int begin = end - 8 < 0 ? 0 : end - 8;
        top.cmd___05Fpayload[w] = end > 0 ? (uint32_t)std::strtoul(hex.substr(begin, end - begin).c_str(), nullptr, 16) : 0;
    }
    top.cmd___05Fvalid = 1; tick(); top.cmd___05Fvalid = 0;

    unsigned long long max_cycles = std::strtoull(plusarg(argc, argv, "max_cycles").c_str(), nullptr, 10);
    unsigned long long cycles = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (!top.done && cycles < max_cycles) { tick(); ++cycles; }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    top.dump_first = (uint32_t)std::strtoul(plusarg(argc, argv, "dump_first").c_str(), nullptr, 10);
    top.dump_words = (uint32_t)std::strtoul(plusarg(argc, argv, "dump_words").c_str(), nullptr, 10);
    top.backdoor_dump = 1; tick(); top.backdoor_dump = 0; tick();
    std::printf("{\"cycles\": %llu, \"seconds\": %.6f, \"done\": %d}\n", cycles, seconds, top.done ? 1 : 0);
    top.final();
    return cycles < max_cycles ? 0 : 2;
}
