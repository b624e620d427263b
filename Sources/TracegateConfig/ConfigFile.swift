/// Parser for the config file syntax: `key = value` lines, `#` comments, blank lines,
/// optionally double-quoted values, and `[route NAME]` sections (whose lines take `sectionKeys`).
/// Checks syntax, unknown keys and duplicates; not values.
enum ConfigFile {
    /// One `key = value` line, value unquoted and stripped of any trailing comment.
    struct Entry: Equatable {
        var key: String
        var value: String
        var line: Int
        /// The `[route NAME]` section the line is in; nil before any section.
        var section: Section? = nil
    }

    struct Section: Equatable, Hashable {
        var name: String
        /// The line of the `[route NAME]` header.
        var line: Int
    }

    /// Parses `contents` (of the file at `path`, used only in error messages).
    static func parse(
        _ contents: String, path: String, knownKeys: [String], sectionKeys: [String] = []
    ) throws(ConfigError) -> [Entry] {
        var entries: [Entry] = []
        var firstLine: [String: Int] = [:]
        var section: Section?
        var sectionLines: [String: Int] = [:]
        var text = Substring(contents)
        if text.first == "\u{FEFF}" { text = text.dropFirst() }

        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let lineNumber = index + 1
            func fail(_ key: String?, _ message: String) -> ConfigError {
                ConfigError(source: .file(path: path, line: lineNumber), key: key, message: message)
            }
            let line = trimmed(rawLine)
            if line.isEmpty || line.first == "#" { continue }
            if line.first == "[" {
                let words = line.dropFirst().prefix { $0 != "]" }.split(separator: " ", omittingEmptySubsequences: true)
                guard line.last == "]", words.count == 2, words[0] == "route" else {
                    throw fail(nil, "expected a section header '[route NAME]', got '\(line)'")
                }
                let name = String(words[1])
                if let first = sectionLines[name] {
                    throw fail(nil, "duplicate route '\(name)' (already defined on line \(first))")
                }
                sectionLines[name] = lineNumber
                section = Section(name: name, line: lineNumber)
                firstLine = [:]
                continue
            }
            let allowed = section == nil ? knownKeys : sectionKeys

            guard let equals = line.firstIndex(of: "="), !trimmed(line[..<equals]).isEmpty else {
                throw fail(nil, "expected 'key = value', got '\(line)'")
            }
            let key = String(trimmed(line[..<equals]))
            guard allowed.contains(key) else {
                let hint = Suggestions.closest(to: key, among: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                let place = section.map { " in [route \($0.name)] (accepted there: \(sectionKeys.joined(separator: ", ")))" } ?? ""
                throw fail(key, "unknown key '\(key)'\(place)\(hint)")
            }
            if let first = firstLine[key] {
                throw fail(key, "duplicate key '\(key)' (already set on line \(first))")
            }
            firstLine[key] = lineNumber

            let value: String
            do {
                value = try parseValue(line[line.index(after: equals)...])
            } catch {
                throw fail(key, "\(error.message) for \(key)")
            }
            entries.append(Entry(key: key, value: value, line: lineNumber, section: section))
        }
        return entries
    }

    private struct SyntaxError: Error {
        var message: String
    }

    /// The text after `=`: a double-quoted string (with `\"` and `\\` escapes) or bare text up to a
    /// `#` that follows whitespace; surrounding whitespace is dropped either way.
    private static func parseValue(_ raw: Substring) throws(SyntaxError) -> String {
        let text = trimmed(raw)
        guard text.first == "\"" else {
            var previous: Character?
            var end = raw.endIndex
            for index in raw.indices {
                if raw[index] == "#", let previous, previous == " " || previous == "\t" {
                    end = index
                    break
                }
                previous = raw[index]
            }
            return String(trimmed(raw[..<end]))
        }

        var value = ""
        var index = text.index(after: text.startIndex)
        while index < text.endIndex {
            let c = text[index]
            index = text.index(after: index)
            if c == "\"" {
                let rest = trimmed(text[index...])
                guard rest.isEmpty || rest.first == "#" else {
                    throw SyntaxError(message: "unexpected text '\(rest)' after the closing quote")
                }
                return value
            }
            if c == "\\", index < text.endIndex, text[index] == "\"" || text[index] == "\\" {
                value.append(text[index])
                index = text.index(after: index)
            } else {
                value.append(c)
            }
        }
        throw SyntaxError(message: "missing closing quote")
    }

    private static func trimmed(_ text: Substring) -> Substring {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let start = text.firstIndex(where: { !isBlank($0) }),
              let last = text.lastIndex(where: { !isBlank($0) }) else { return text[text.endIndex...] }
        return text[start...last]
    }
}
