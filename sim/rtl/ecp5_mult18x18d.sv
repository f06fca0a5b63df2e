// A simulation model of the Lattice ECP5 MULT18X18D (18 x 18 multiplier of the sysDSP
// slice), for Verilator runs of Verilog elaborated for an ECP5 (hw.decode.products
// Ecp5Target: Pipe.mul's products as MULT18X18D with their own registers).
//
// Modelled, as in Lattice's ECP5 sysDSP usage guide (FPGA-TN-02205) and its simulation
// library: P = A x B (36 bits), each operand two's complement when SIGNEDA / SIGNEDB is
// high, else unsigned; the input registers (REG_INPUTA_CLK, REG_INPUTB_CLK, which also
// hold SIGNEDA / SIGNEDB) and the output register (REG_OUTPUT_CLK) when their parameter
// names CLK0, clocked by CLK0, enabled by CE0, reset by RST0 (RESETMODE "SYNC") to zero.
// Not modelled (Ecp5Target never uses them; an instance that does stops the simulation):
// the pipeline register, CLK1-3 / CE1-3 / RST1-3, asynchronous reset, the shift and
// cascade paths (SOURCEA/B, SRIA/B, SROA/B, ROA/B/C), MULT_BYPASS, the C input.
module MULT18X18D #(
    parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0", parameter REG_INPUTA_RST = "RST0",
    parameter REG_INPUTB_CLK = "NONE", parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
    parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0", parameter REG_OUTPUT_RST = "RST0",
    parameter REG_PIPELINE_CLK = "NONE", parameter GSR = "ENABLED", parameter RESETMODE = "SYNC",
    parameter SOURCEB_MODE = "B_SHIFT", parameter MULT_BYPASS = "DISABLED"
) (
    input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    /* verilator lint_off UNUSEDSIGNAL */
    input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input SOURCEA, SOURCEB,
    /* verilator lint_on UNUSEDSIGNAL */
    input SIGNEDA, SIGNEDB, CLK0, CE0, RST0,
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
    output P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0
);
    initial begin
        if (REG_PIPELINE_CLK != "NONE" || MULT_BYPASS != "DISABLED" || RESETMODE != "SYNC"
            || (REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0")
            || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
            || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0")
            || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_OUTPUT_CE != "CE0"
            || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0" || REG_OUTPUT_RST != "RST0") begin
            $display("MULT18X18D model: a register mode it does not model (%m)");
            $finish;
        end
    end

    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_r = 18'd0, b_r = 18'd0;
    reg sa_r = 1'b0, sb_r = 1'b0;
    reg [35:0] p_r = 36'd0;

    wire [17:0] ma = (REG_INPUTA_CLK == "NONE") ? a : a_r;
    wire [17:0] mb = (REG_INPUTB_CLK == "NONE") ? b : b_r;
    wire sa = (REG_INPUTA_CLK == "NONE") ? SIGNEDA : sa_r;
    wire sb = (REG_INPUTB_CLK == "NONE") ? SIGNEDB : sb_r;
    // the low 36 bits of the 36 x 36 product of the extended operands: exact for signed,
    // unsigned and mixed operands
    wire [35:0] xa = {{18{sa & ma[17]}}, ma};
    wire [35:0] xb = {{18{sb & mb[17]}}, mb};
    wire [35:0] prod = xa * xb;
    wire [35:0] p = (REG_OUTPUT_CLK == "NONE") ? prod : p_r;

    always @(posedge CLK0) begin
        if (RST0) begin
            a_r <= 18'd0; b_r <= 18'd0; sa_r <= 1'b0; sb_r <= 1'b0; p_r <= 36'd0;
        end else if (CE0) begin
            a_r <= a; b_r <= b; sa_r <= SIGNEDA; sb_r <= SIGNEDB; p_r <= prod;
        end
    end

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
            P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
