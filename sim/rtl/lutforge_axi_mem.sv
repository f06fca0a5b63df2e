// AXI4 memory model for simulation: one read and one write port onto one array.
//
// Parameters:
//   LATENCY         cycles from an accepted AR/AW to its first data/response
//   RD_NUM/RD_DEN   read bandwidth in beats per cycle (RD_NUM/RD_DEN <= 1)
//   WR_NUM/WR_DEN   write bandwidth in beats per cycle
//   REFRESH_PERIOD  every REFRESH_PERIOD cycles both ports stall for REFRESH_CYCLES
//                   (0 disables), like DRAM refresh
//   STALL_PERCENT   each channel (AR, R, AW, W, B) is also held off at random in this
//                   share of cycles (LFSR seeded by STALL_SEED), to exercise back-pressure
// Read bursts are answered in order (legal for AXI4 whatever the IDs). INCR bursts only.
//
// Backdoor (no per-beat host traffic): a cycle with `backdoor_load` high runs
// $readmemh(+memload=FILE) (the file's @address lines place words); one with
// `backdoor_dump` high runs $writememh(+memdump=FILE) over words
// [dump_first, dump_first + dump_words).
module lutforge_axi_mem #(
    parameter int ADDR_BITS = 32,
    parameter int DATA_BITS = 64,
    parameter int ID_BITS = 1,
    parameter int WORDS = 1 << 20,
    parameter int LATENCY = 16,
    parameter int RD_NUM = 1,
    parameter int RD_DEN = 1,
    parameter int WR_NUM = 1,
    parameter int WR_DEN = 1,
    parameter int REFRESH_PERIOD = 0,
    parameter int REFRESH_CYCLES = 0,
    parameter int STALL_PERCENT = 0,
    parameter int STALL_SEED = 1
) (
    input  logic                 clk,
    input  logic                 rst,
    input  logic [ADDR_BITS-1:0] araddr,
    input  logic [7:0]           arlen,
    input  logic [2:0]           arsize,
    input  logic [1:0]           arburst,
    input  logic [ID_BITS-1:0]   arid,
    input  logic                 arvalid,
    output logic                 arready,
    output logic [DATA_BITS-1:0] rdata,
    output logic [1:0]           rresp,
    output logic                 rlast,
    output logic [ID_BITS-1:0]   rid,
    output logic                 rvalid,
    input  logic                 rready,
    input  logic [ADDR_BITS-1:0] awaddr,
    input  logic [7:0]           awlen,
    input  logic [2:0]           awsize,
    input  logic [1:0]           awburst,
    input  logic [ID_BITS-1:0]   awid,
    input  logic                 awvalid,
    output logic                 awready,
    input  logic [DATA_BITS-1:0] wdata,
    input  logic [DATA_BITS/8-1:0] wstrb,
    input  logic                 wlast,
    input  logic                 wvalid,
    output logic                 wready,
    output logic [1:0]           bresp,
    output logic [ID_BITS-1:0]   bid,
    output logic                 bvalid,
    input  logic                 bready,
    input  logic                 backdoor_load,
    input  logic                 backdoor_dump,
    input  logic [31:0]          dump_first,
    input  logic [31:0]          dump_words
);
    localparam int BPB = DATA_BITS / 8;
    localparam int SHIFT = $clog2(BPB);
    localparam int QDEPTH = 16;
    localparam int QBITS = $clog2(QDEPTH);
    localparam int WBITS = $clog2(WORDS);

    logic [DATA_BITS-1:0] mem [WORDS];

    // Backdoor file names come from plusargs so the test bench can pick its folder.
    string load_file, dump_file;
    initial begin
        if (!$value$plusargs("memload=%s", load_file)) load_file = "mem_load.hex";
        if (!$value$plusargs("memdump=%s", dump_file)) dump_file = "mem_dump.hex";
    end
    always @(posedge clk) begin
        if (backdoor_load) $readmemh(load_file, mem);
        if (backdoor_dump) $writememh(dump_file, mem, dump_first, dump_first + dump_words - 1);
    end

    logic [63:0] cycle;
    always_ff @(posedge clk) cycle <= rst ? 64'd0 : cycle + 64'd1;

    // Refresh: both ports pause for REFRESH_CYCLES out of every REFRESH_PERIOD.
    logic refreshing;
    generate
        if (REFRESH_PERIOD > 0) begin : g_refresh
            logic [31:0] phase;
            always_ff @(posedge clk) phase <= (rst || phase == REFRESH_PERIOD - 1) ? 32'd0 : phase + 32'd1;
            assign refreshing = phase < REFRESH_CYCLES;
        end else begin : g_no_refresh
            assign refreshing = 1'b0;
        end
    endgenerate

    // Random back-pressure: a 32-bit Galois LFSR; each channel looks at its own byte.
    logic [31:0] lfsr;
    always_ff @(posedge clk) lfsr <= rst ? 32'(STALL_SEED) | 32'd1 : (lfsr >> 1) ^ (lfsr[0] ? 32'hA3000000 : 32'd0);
    function automatic logic hold(input logic [7:0] r);
        return STALL_PERCENT > 0 && 32'(r) * 100 < 32'(STALL_PERCENT) * 256;
    endfunction
    wire hold_ar = hold(lfsr[7:0]), hold_r = hold(lfsr[15:8]), hold_aw = hold(lfsr[23:16]);
    wire hold_w = hold(lfsr[31:24]), hold_b = hold(lfsr[11:4]);

    // ---------------------------------------------------------------- reads
    logic [ADDR_BITS-1:0] rq_addr [QDEPTH];
    logic [7:0]           rq_len  [QDEPTH];
    logic [ID_BITS-1:0]   rq_id   [QDEPTH];
    logic [63:0]          rq_due  [QDEPTH];
    logic [QBITS:0]       rq_wp, rq_rp;
    logic [7:0]           r_beat;     // beats sent of the head burst
    logic [31:0]          r_tokens;
    wire rq_empty = rq_wp == rq_rp;
    wire rq_full  = (rq_wp - rq_rp) == QDEPTH[QBITS:0];
    wire [QBITS-1:0] rq_head = rq_rp[QBITS-1:0];
    // Token bucket: RD_NUM tokens a cycle, a beat costs RD_DEN, at most one beat banked.
    wire [31:0] r_avail = r_tokens + 32'(RD_NUM);
    wire r_can = !rq_empty && rq_due[rq_head] <= cycle && r_avail >= 32'(RD_DEN) && !refreshing && !hold_r;
    wire r_send = (!rvalid || rready) && r_can;
    // Word index of the next beat (the address is beat aligned; wraps at WORDS).
    wire [WBITS-1:0] r_word = WBITS'((32'(rq_addr[rq_head] >> SHIFT) + 32'(r_beat)) % 32'(WORDS));

    assign arready = !rq_full && !hold_ar;
    always_ff @(posedge clk) begin
        if (rst) begin
            rq_wp <= '0; rq_rp <= '0; r_beat <= '0; rvalid <= 1'b0; r_tokens <= '0;
        end else begin
            if (arvalid && arready) begin
                rq_addr[rq_wp[QBITS-1:0]] <= araddr;
                rq_len[rq_wp[QBITS-1:0]]  <= arlen;
                rq_id[rq_wp[QBITS-1:0]]   <= arid;
                rq_due[rq_wp[QBITS-1:0]]  <= cycle + 64'(LATENCY);
                rq_wp <= rq_wp + 1'b1;
            end
            r_tokens <= r_send ? r_avail - 32'(RD_DEN) : (r_avail > 32'(RD_DEN) ? 32'(RD_DEN) : r_avail);
            if (!rvalid || rready) begin
                if (r_can) begin
                    rvalid <= 1'b1;
                    rdata  <= mem[r_word];
                    rid    <= rq_id[rq_head];
                    rlast  <= r_beat == rq_len[rq_head];
                    if (r_beat == rq_len[rq_head]) begin
                        r_beat <= '0;
                        rq_rp <= rq_rp + 1'b1;
                    end else begin
                        r_beat <= r_beat + 1'b1;
                    end
                end else begin
                    rvalid <= 1'b0;
                end
            end
        end
    end
    assign rresp = 2'b00;

    // ---------------------------------------------------------------- writes
    logic [ADDR_BITS-1:0] wq_addr [QDEPTH];
    logic [ID_BITS-1:0]   wq_id   [QDEPTH];
    logic [QBITS:0]       wq_wp, wq_rp;
    logic [7:0]           w_beat;
    logic [31:0]          w_tokens;
    logic [ID_BITS-1:0]   bq_id  [QDEPTH];
    logic [63:0]          bq_due [QDEPTH];
    logic [QBITS:0]       bq_wp, bq_rp;
    wire wq_empty = wq_wp == wq_rp;
    wire wq_full  = (wq_wp - wq_rp) == QDEPTH[QBITS:0];
    wire bq_full  = (bq_wp - bq_rp) == QDEPTH[QBITS:0];
    wire [QBITS-1:0] wq_head = wq_rp[QBITS-1:0];
    wire [WBITS-1:0] w_word = WBITS'((32'(wq_addr[wq_head] >> SHIFT) + 32'(w_beat)) % 32'(WORDS));

    assign awready = !wq_full && !hold_aw;
    wire [31:0] w_avail = w_tokens + 32'(WR_NUM);
    assign wready = !wq_empty && !bq_full && w_avail >= 32'(WR_DEN) && !refreshing && !hold_w;
    always_ff @(posedge clk) begin
        if (rst) begin
            wq_wp <= '0; wq_rp <= '0; w_beat <= '0; bq_wp <= '0; w_tokens <= '0;
        end else begin
            if (awvalid && awready) begin
                wq_addr[wq_wp[QBITS-1:0]] <= awaddr;
                wq_id[wq_wp[QBITS-1:0]]   <= awid;
                wq_wp <= wq_wp + 1'b1;
            end
            if (wvalid && wready) begin
                for (int i = 0; i < BPB; i++)
                    if (wstrb[i]) mem[w_word][i*8 +: 8] <= wdata[i*8 +: 8];
                w_tokens <= w_avail - 32'(WR_DEN);
                if (wlast) begin
                    w_beat <= '0;
                    wq_rp <= wq_rp + 1'b1;
                    bq_id[bq_wp[QBITS-1:0]]  <= wq_id[wq_head];
                    bq_due[bq_wp[QBITS-1:0]] <= cycle + 64'(LATENCY);
                    bq_wp <= bq_wp + 1'b1;
                end else begin
                    w_beat <= w_beat + 1'b1;
                end
            end else begin
                w_tokens <= w_avail > 32'(WR_DEN) ? 32'(WR_DEN) : w_avail;
            end
        end
    end

    wire [QBITS-1:0] bq_head = bq_rp[QBITS-1:0];
    // bvalid may drop while held: the B queue head waits (the master keeps bready high).
    assign bvalid = bq_wp != bq_rp && bq_due[bq_head] <= cycle && !hold_b;
    assign bid = bq_id[bq_head];
    assign bresp = 2'b00;
    always_ff @(posedge clk) begin
        if (rst) bq_rp <= '0;
        else if (bvalid && bready) bq_rp <= bq_rp + 1'b1;
    end

    // Unused AXI fields: sizes are always full width and bursts INCR (checked by design).
    wire unused = &{1'b0, arsize, arburst, awsize, awburst, awlen};
endmodule
