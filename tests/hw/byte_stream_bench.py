"""Testbenches that talk to a byte-stream device (``rx``/``tx`` streams of 8 bits) in the
Amaranth simulator: random gaps on the way in, random back-pressure on the way out."""


def add_byte_stream_benches(sim, dut, stream: bytes, out: list, *, rnd, p_rx: float, p_tx: float,
                            expect_len: int, max_cycles: int, tail_cycles: int) -> None:
    """Feed ``stream`` into ``dut.rx`` (a byte offered with probability ``p_rx`` per cycle),
    collect ``dut.tx`` into ``out`` (ready with probability ``p_tx``), and run until
    ``expect_len`` bytes came back or ``max_cycles`` passed, then ``tail_cycles`` more (so
    a byte that must not come would be seen)."""

    async def driver(ctx):
        for b in stream:
            while rnd.random() > p_rx:
                ctx.set(dut.rx.valid, 0)
                await ctx.tick()
            ctx.set(dut.rx.payload, b)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick().until(dut.rx.ready)
        ctx.set(dut.rx.valid, 0)

    async def monitor(ctx):
        while True:
            ready = rnd.random() < p_tx
            ctx.set(dut.tx.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if valid and ready:
                out.append(payload)

    async def main(ctx):
        cycles = 0
        while len(out) < expect_len and cycles < max_cycles:
            await ctx.tick().repeat(64)
            cycles += 64
        await ctx.tick().repeat(tail_cycles)

    sim.add_testbench(driver, background=True)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(main)
