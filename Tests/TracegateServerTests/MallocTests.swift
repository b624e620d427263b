import XCTest

@testable import TracegateServer

final class MallocTests: XCTestCase {
    func testEventLoopHeapsAreMadeWritableUnderTheUsualOvercommitModes() {
        for mode in ["0\n", "1\n", "0", nil] {
            XCTAssertEqual(Malloc.heapToMakeWritable(overcommitMode: mode, environment: [:]), 48 << 20, "mode \(String(describing: mode))")
        }
    }

    func testStrictOvercommitLeavesHeapsToGlibc() {
        // glibc gives a trimmed heap's pages up entirely there, the writable extent with them.
        XCTAssertNil(Malloc.heapToMakeWritable(overcommitMode: "2\n", environment: [:]))
    }

    func testAnArenaLimitFromTheEnvironmentLeavesHeapsToGlibc() {
        // Loops may then share an arena: two reserving at once would overflow one 64 MiB heap.
        XCTAssertNil(Malloc.heapToMakeWritable(overcommitMode: "0\n", environment: ["MALLOC_ARENA_MAX": "2"]))
        XCTAssertEqual(Malloc.heapToMakeWritable(overcommitMode: "0\n", environment: ["MALLOC_TOP_PAD_": "0"]), 48 << 20)
    }
}
