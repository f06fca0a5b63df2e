// The simulated board over a bit-level UART: a Verilator model of lutforge_uart_board_top
// (host link behind UartRx/UartTx + decode engine + memory model) whose serial pins are
// driven and sampled bit by bit here and served on a pseudo-terminal, so a host opens it
// as serial:///dev/pts/N with pyserial, the same transport code as a real board's UART.
// Any top with the ports clk, rst, uart_rx (in), uart_tx, idle, busy (out) works (a board
// top with the memory model in place of its DRAM controller: sim/uart_board.py
// build_uart_design); the model class is Vuartboard.
//
// Usage: Vuartboard --bit-cycles N [--flip-ppm P] [--seed S] [--link PATH]
//   N: clock cycles per bit (the divisor the gateware was built with). When ready it
//   prints one line (flushed):
//     lutforge sim-board serial on /dev/pts/N (host target serial:///dev/pts/N)
//   --link PATH also makes PATH a symlink to the pty (removed at exit). The model, and so
//   the memory, persists while the process runs; a host may close and reopen the port.
//   SIGTERM / SIGINT end it cleanly (exit 0).
//
// The line: host -> board bytes are serialized 8N1 (start, 8 data bits LSB first, stop)
// onto uart_rx, N cycles per bit, back to back; uart_tx is sampled every cycle and
// decoded by a receiver that samples each bit in its middle (a low stop bit is a
// framing error: the byte is dropped, as a real UART would). --flip-ppm P inverts each
// bit on the line, in either direction, with probability P / 1e6 (seeded by --seed):
// line noise, to exercise the protocol's CRC and retries.
//
// Loop: runs the clock in chunks of cycles, moving pty bytes in and out between chunks;
// when the board is idle (link waiting, engine idle, both lines idle) and nothing is to
// be sent, it blocks in select() on the pty for a few ms instead of spinning.
// On exit it prints one line of statistics: {"cycles": N, "busy_cycles": N,
// "tick_seconds": S, "seconds": S, "rx_bytes": N, "tx_bytes": N, "flipped_bits": N,
// "framing_errors": N} (bytes host -> board and board -> host on the line, bits flipped,
// framing errors seen by the host-side receiver).
#include "Vuartboard.h"
#include "verilated.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <string>
#include <sys/select.h>
#include <termios.h>
#include <unistd.h>
#include <vector>

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

static const unsigned long CHUNK = 8192;        // cycles between pty polls when busy
static const int IDLE_WAIT_US = 5000;           // select() timeout when idle
static const size_t TX_HIGH = 1 << 20;          // drop board -> host bytes above this backlog

static void die(const std::string& msg) {
    std::fprintf(stderr, "lutforge sim-board: %s\n", msg.c_str());
    std::exit(2);
}

// xorshift64*: the line-noise generator (seeded, reproducible)
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed ? seed : 0x9E3779B97F4A7C15ull) {}
    uint64_t next() { s ^= s >> 12; s ^= s << 25; s ^= s >> 27; return s * 2685821657736338717ull; }
};

int main(int argc, char** argv) {
    long bit_cycles = 0;
    double flip_ppm = 0;
    uint64_t seed = 1;
    std::string link_path;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--bit-cycles") == 0 && i + 1 < argc) bit_cycles = std::atol(argv[++i]);
        else if (std::strcmp(argv[i], "--flip-ppm") == 0 && i + 1 < argc) flip_ppm = std::atof(argv[++i]);
        else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
        else if (std::strcmp(argv[i], "--link") == 0 && i + 1 < argc) link_path = argv[++i];
        else if (argv[i][0] != '+')
            die(std::string("unknown argument ") + argv[i] +
                " (usage: --bit-cycles N [--flip-ppm P] [--seed S] [--link PATH])");
    }
    if (bit_cycles < 4) die("--bit-cycles N (at least 4) is required");
    if (flip_ppm < 0 || flip_ppm > 1e6) die("--flip-ppm must be 0..1000000");

    int mfd = posix_openpt(O_RDWR | O_NOCTTY);
    if (mfd < 0 || grantpt(mfd) != 0 || unlockpt(mfd) != 0) die(std::string("cannot open a pty: ") + std::strerror(errno));
    std::string pts = ptsname(mfd);
    // Hold the slave open: the master then never reads EIO while no host has the port open.
    int sfd = open(pts.c_str(), O_RDWR | O_NOCTTY);
    if (sfd < 0) die("cannot open " + pts + ": " + std::strerror(errno));
    termios tio{};
    tcgetattr(sfd, &tio);
    cfmakeraw(&tio);
    tcsetattr(sfd, TCSANOW, &tio);
    fcntl(mfd, F_SETFL, fcntl(mfd, F_GETFL) | O_NONBLOCK);
    if (!link_path.empty()) {
        unlink(link_path.c_str());
        if (symlink(pts.c_str(), link_path.c_str()) != 0) die("cannot link " + link_path + ": " + std::strerror(errno));
    }

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    Rng rng(seed);
    const uint64_t flip_threshold = (uint64_t)(flip_ppm / 1e6 * 18446744073709551615.0);
    auto flip = [&]() { return flip_ppm > 0 && rng.next() < flip_threshold; };
    unsigned long long flipped = 0, framing_errors = 0, rx_bytes = 0, tx_bytes = 0;

    VerilatedContext ctx;
    ctx.commandArgs(argc, argv);
    Vuartboard top{&ctx};
    unsigned long long cycles = 0, busy_cycles = 0;
    std::deque<unsigned char> rx;           // host -> board, waiting for the line
    std::vector<unsigned char> tx;          // board -> host, waiting for the pty

    // host -> board serializer: 10 levels per byte, bit_cycles cycles each
    int s_bit = -1;                         // -1: line idle; 0..9 the bit on the line
    long s_left = 0;
    unsigned s_byte = 0;
    int s_level = 1;
    // board -> host receiver
    int r_state = 0;                        // 0 idle, 1 start, 2..9 data, 10 stop, 11 wait high
    long r_left = 0;
    unsigned r_byte = 0;

    auto tick = [&]() {
        // the serializer: next level
        if (s_bit >= 0 && s_left == 0) {
            if (++s_bit == 10) s_bit = -1;
        }
        if (s_bit < 0 && !rx.empty()) { s_byte = rx.front(); rx.pop_front(); s_bit = 0; ++rx_bytes; }
        if (s_bit >= 0 && s_left == 0) {
            s_left = bit_cycles;
            s_level = s_bit == 0 ? 0 : s_bit == 9 ? 1 : (s_byte >> (s_bit - 1)) & 1;
            if (flip()) { s_level ^= 1; ++flipped; }
        }
        if (s_bit < 0) s_level = 1;
        if (s_bit >= 0) --s_left;
        top.uart_rx = s_level;
        top.clk = 0;
        top.eval();
        int pin = top.uart_tx;
        busy_cycles += top.busy;
        top.clk = 1;
        top.eval();
        ++cycles;
        // the receiver: sample each bit in its middle
        switch (r_state) {
        case 0:
            if (!pin) { r_state = 1; r_left = bit_cycles / 2; }
            break;
        case 11:
            if (pin) r_state = 0;
            break;
        default:
            if (--r_left > 0) break;
            r_left = bit_cycles;
            if (flip()) { pin ^= 1; ++flipped; }
            if (r_state == 1) {
                r_state = pin ? 0 : 2;          // a glitch is no start bit
                r_byte = 0;
            } else if (r_state <= 9) {
                r_byte |= (unsigned)pin << (r_state - 2);
                ++r_state;
            } else {
                if (pin) {
                    if (tx.size() < TX_HIGH) tx.push_back((unsigned char)r_byte);
                    ++tx_bytes;
                    r_state = 0;
                } else {
                    ++framing_errors;
                    r_state = 11;
                }
            }
        }
    };
    top.uart_rx = 1;
    top.rst = 1;
    for (int i = 0; i < 4; ++i) { top.clk = 0; top.eval(); top.clk = 1; top.eval(); }
    top.rst = 0;

    std::printf("lutforge sim-board serial on %s (host target serial://%s)\n", pts.c_str(),
                (link_path.empty() ? pts : link_path).c_str());
    std::fflush(stdout);

    unsigned char buf[1 << 16];
    double tick_seconds = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (!g_stop) {
        bool idle = top.idle && s_bit < 0 && rx.empty() && r_state == 0;
        fd_set rfds, wfds;
        FD_ZERO(&rfds);
        FD_ZERO(&wfds);
        FD_SET(mfd, &rfds);
        if (!tx.empty()) FD_SET(mfd, &wfds);
        timeval tv{0, idle ? IDLE_WAIT_US : 0};
        int n = select(mfd + 1, &rfds, &wfds, nullptr, &tv);
        if (n < 0 && errno != EINTR) die(std::string("select failed: ") + std::strerror(errno));
        if (n > 0 && FD_ISSET(mfd, &rfds)) {
            ssize_t got = read(mfd, buf, sizeof buf);
            if (got > 0) rx.insert(rx.end(), buf, buf + got);
        }
        if (n > 0 && FD_ISSET(mfd, &wfds) && !tx.empty()) {
            ssize_t put = write(mfd, tx.data(), tx.size());
            if (put > 0) tx.erase(tx.begin(), tx.begin() + put);
        }
        idle = top.idle && s_bit < 0 && rx.empty() && r_state == 0;
        if (!idle) {
            auto c0 = std::chrono::steady_clock::now();
            for (unsigned long i = 0; i < CHUNK && !g_stop; ++i) {
                tick();
                if (top.idle && s_bit < 0 && rx.empty() && r_state == 0) break;
            }
            tick_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
        }
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!link_path.empty()) unlink(link_path.c_str());
    close(sfd);
    close(mfd);
    top.final();
    std::printf("{\"cycles\": %llu, \"busy_cycles\": %llu, \"tick_seconds\": %.3f, \"seconds\": %.3f, "
                "\"rx_bytes\": %llu, \"tx_bytes\": %llu, \"flipped_bits\": %llu, \"framing_errors\": %llu}\n",
                cycles, busy_cycles, tick_seconds, seconds, rx_bytes, tx_bytes, flipped, framing_errors);
    std::fflush(stdout);
    return 0;
}
