// The simulated board: a Verilator model of lutforge_board_top (host link + decode engine +
// memory model) whose byte streams are a socket, with the clock loop in C++ (no Python).
//
// Usage: Vboard --listen tcp://127.0.0.1:PORT | unix:///path/to/socket
//   PORT 0 picks a free port. When ready it prints one line (flushed):
//     lutforge sim-board listening on tcp://127.0.0.1:PORT   (or unix:///path)
//   It serves one client at a time (others wait in the listen queue); the model, and so
//   the memory, persists across reconnects. SIGTERM / SIGINT end it cleanly (exit 0).
//
// Loop: each round moves socket bytes into an rx buffer and tx bytes out, then runs the
// clock for up to CHUNK cycles, offering rx bytes on rx (valid/ready) and taking tx bytes
// (tx ready always high). A new client's bytes are offered only after the link has dropped
// whatever the previous client left half sent (`flush`, applied when `link_idle`). When
// the board is idle (link waiting, engine idle, nothing on tx) and no rx bytes are
// pending, it blocks in select() for a few ms instead of spinning.
// On exit it prints one line of statistics: {"cycles": N, "busy_cycles": N, "tick_seconds": S,
// "seconds": S} (cycles simulated, of them with the engine busy, wall time spent running
// the clock, wall time in all).
//
// Verilator spells the double underscore of Amaranth port names "___05F".
#include "Vboard.h"
#include "verilated.h"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int) { g_stop = 1; }

static const unsigned long CHUNK = 4096;        // cycles between socket polls when busy
static const int IDLE_WAIT_US = 5000;           // select() timeout when idle
static const size_t TX_HIGH = 1 << 20;          // stop taking tx bytes above this backlog

static void die(const std::string& msg) {
    std::fprintf(stderr, "lutforge sim-board: %s\n", msg.c_str());
    std::exit(2);
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

int main(int argc, char** argv) {
    std::string listen = "tcp://127.0.0.1:0";
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--listen") == 0 && i + 1 < argc) listen = argv[++i];
        else if (argv[i][0] != '+') die(std::string("unknown argument ") + argv[i] + " (usage: --listen URL)");
    }
    int lfd = -1;
    std::string shown, unix_path;
    if (listen.rfind("tcp://", 0) == 0) {
        std::string hp = listen.substr(6);
        size_t colon = hp.rfind(':');
        if (colon == std::string::npos) die("--listen tcp://HOST:PORT expected, got " + listen);
        std::string host = hp.substr(0, colon);
        int port = std::atoi(hp.c_str() + colon + 1);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) die("not an IPv4 address: " + host);
        lfd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(lfd, (sockaddr*)&a, sizeof a) != 0) die("cannot bind " + listen + ": " + std::strerror(errno));
        socklen_t len = sizeof a;
        getsockname(lfd, (sockaddr*)&a, &len);
        shown = "tcp://" + host + ":" + std::to_string(ntohs(a.sin_port));
    } else if (listen.rfind("unix://", 0) == 0) {
        unix_path = listen.substr(7);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        if (unix_path.empty() || unix_path.size() >= sizeof a.sun_path) die("bad socket path in " + listen);
        std::strcpy(a.sun_path, unix_path.c_str());
        unlink(unix_path.c_str());
        lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(lfd, (sockaddr*)&a, sizeof a) != 0) die("cannot bind " + listen + ": " + std::strerror(errno));
        shown = "unix://" + unix_path;
    } else {
        die("--listen must be tcp://127.0.0.1:PORT or unix:///path, got " + listen);
    }
    if (::listen(lfd, 1) != 0) die(std::string("listen failed: ") + std::strerror(errno));
    set_nonblocking(lfd);

    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    VerilatedContext ctx;
    ctx.commandArgs(argc, argv);
    Vboard top{&ctx};
    unsigned long long cycles = 0, busy_cycles = 0;
    std::vector<unsigned char> rx, tx;      // rx: bytes for the model; tx: bytes for the client
    size_t rx_head = 0;
    bool flush_pending = false;             // a new client: drop a partial frame first
    auto tick = [&]() {
        top.clk = 0;
        top.flush = flush_pending;
        top.rx___05Fvalid = !flush_pending && rx_head < rx.size();
        top.rx___05Fpayload = rx_head < rx.size() ? rx[rx_head] : 0;
        top.tx___05Fready = tx.size() < TX_HIGH;
        top.eval();
        bool rx_fire = top.rx___05Fvalid && top.rx___05Fready;
        bool tx_fire = top.tx___05Fvalid && top.tx___05Fready;
        unsigned char out = top.tx___05Fpayload;
        if (flush_pending && top.link_idle) flush_pending = false;     // applied at this edge
        busy_cycles += top.busy;
        top.clk = 1;
        top.eval();
        ++cycles;
        if (rx_fire) ++rx_head;
        if (tx_fire) tx.push_back(out);
    };
    top.rst = 1;
    for (int i = 0; i < 4; ++i) tick();
    top.rst = 0;
    tick();

    std::printf("lutforge sim-board listening on %s\n", shown.c_str());
    std::fflush(stdout);

    int cfd = -1;
    unsigned char buf[1 << 16];
    double tick_seconds = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (!g_stop) {
        bool idle = top.idle && rx_head >= rx.size() && !flush_pending;
        // ---- sockets: wait only when nothing is happening
        fd_set rfds, wfds;
        FD_ZERO(&rfds);
        FD_ZERO(&wfds);
        int fd = cfd >= 0 ? cfd : lfd;
        FD_SET(fd, &rfds);
        if (cfd >= 0 && !tx.empty()) FD_SET(cfd, &wfds);
        timeval tv{0, idle ? IDLE_WAIT_US : 0};
        int n = select(fd + 1, &rfds, &wfds, nullptr, &tv);
        if (n < 0 && errno != EINTR) die(std::string("select failed: ") + std::strerror(errno));
        if (n > 0 && cfd < 0 && FD_ISSET(lfd, &rfds)) {
            cfd = accept(lfd, nullptr, nullptr);
            if (cfd >= 0) {
                flush_pending = true;
                set_nonblocking(cfd);
                int one = 1;
                if (unix_path.empty()) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            }
        } else if (n > 0 && cfd >= 0) {
            bool closed = false;
            if (FD_ISSET(cfd, &rfds)) {
                if (rx_head > 0 && rx_head == rx.size()) { rx.clear(); rx_head = 0; }
                ssize_t got = recv(cfd, buf, sizeof buf, 0);
                if (got > 0) rx.insert(rx.end(), buf, buf + got);
                else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) closed = true;
            }
            if (!closed && FD_ISSET(cfd, &wfds)) {
                ssize_t put = send(cfd, tx.data(), tx.size(), 0);
                if (put > 0) tx.erase(tx.begin(), tx.begin() + put);
                else if (put < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) closed = true;
            }
            if (closed) {           // the client left: drop what was in flight for it
                close(cfd);
                cfd = -1;
                tx.clear();
                rx.clear();
                rx_head = 0;
            }
        }
        if (cfd < 0) tx.clear();
        // ---- the clock: run until idle (with nothing to offer) or a chunk is done
        if (!(top.idle && rx_head >= rx.size()) || flush_pending) {
            auto c0 = std::chrono::steady_clock::now();
            for (unsigned long i = 0; i < CHUNK && !g_stop; ++i) {
                if (top.idle && rx_head >= rx.size() && !flush_pending) break;
                tick();
                if (tx.size() >= 4096 && cfd >= 0) break;   // flush responses promptly
            }
            tick_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
        }
        if (rx_head >= rx.size() && rx_head > 0) { rx.clear(); rx_head = 0; }
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (cfd >= 0) close(cfd);
    close(lfd);
    if (!unix_path.empty()) unlink(unix_path.c_str());
    top.final();
    std::printf("{\"cycles\": %llu, \"busy_cycles\": %llu, \"tick_seconds\": %.3f, \"seconds\": %.3f}\n",
                cycles, busy_cycles, tick_seconds, seconds);
    std::fflush(stdout);
    return 0;
}
