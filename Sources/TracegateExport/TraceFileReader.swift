import Foundation
import TracegateTrace

#if canImport(Glibc)
import Glibc
#endif

/// Reads a trace file back.
public enum TraceFileReader {
    /// The records of `path`, and the numbers of lines that are not records (reported, not fatal).
    public static func read(path: String) throws -> (records: [TraceRecord], badLines: [Int]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let decoder = JSONDecoder()
        var records: [TraceRecord] = []
        var badLines: [Int] = []
        for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
            if let record = try? decoder.decode(TraceRecord.self, from: Data(line)) {
                records.append(record)
            } else {
                badLines.append(index + 1)
            }
        }
        return (records, badLines)
    }
}
