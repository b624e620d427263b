/// "Did you mean …?" suggestions for misspelled keys, flags and environment variables.
enum Suggestions {
    /// The candidate closest to `input` (case-insensitive edit distance), if within `maxDistance`
    /// and closer than the length of `input` itself; ties go to the earliest candidate.
    static func closest(to input: String, among candidates: [String], maxDistance: Int = 3) -> String? {
        let needle = Array(input.lowercased())
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(needle, Array(candidate.lowercased()))
            if distance <= maxDistance, distance < needle.count, distance < (best?.distance ?? .max) {
                best = (candidate, distance)
            }
        }
        return best?.candidate
    }

    /// Levenshtein distance (insertions, deletions, substitutions).
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        for (i, ca) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, cb) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
