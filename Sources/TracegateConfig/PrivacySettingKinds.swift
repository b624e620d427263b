import Foundation

/// Value kinds of the privacy and sampling settings.
extension ValueKind where Value == [String] {
    /// `Authorization,Cookie`: HTTP header names; empty means none.
    static var headerNameList: Self {
        .init(placeholder: "NAME,...", accepted: "comma-separated HTTP header names such as Authorization,Cookie, or nothing",
              parse: { (text) throws(ValueRejection) in
                  try items(text).map { (name) throws(ValueRejection) in try ValueParsers.token(name) }
              })
    }

    /// `user.email,messages.*.name,**.password`: dotted JSON paths; empty means none.
    static var jsonPathList: Self {
        .init(placeholder: "PATH,...",
              accepted: "comma-separated dotted JSON paths such as user.email,messages.*.name,**.password (* is any one key or index, ** any depth)",
              parse: { (text) throws(ValueRejection) in
                  try items(text).map { (path) throws(ValueRejection) in
                      let segments = path.split(separator: ".", omittingEmptySubsequences: false)
                      guard !segments.contains(where: \.isEmpty) else { throw ValueRejection("'\(path)' has an empty segment") }
                      guard segments.last != "**" else { throw ValueRejection("'\(path)' cannot end with **") }
                      return path
                  }
              })
    }

    fileprivate static func items(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}

extension ValueKind where Value == [BuiltinRedaction] {
    /// `api-keys,emails`, or `none`.
    static var builtinRedactionList: Self {
        let names = BuiltinRedaction.allCases.map(\.rawValue)
        return .init(placeholder: "NAME,...", accepted: "comma-separated names among \(names.joined(separator: ", ")), or none",
                     parse: { (text) throws(ValueRejection) in
                         let items = ValueKind<[String]>.items(text)
                         if items == ["none"] || items.isEmpty { return [] }
                         return try items.map { (item) throws(ValueRejection) in try ValueParsers.oneOf(item, BuiltinRedaction.self) }
                     })
    }
}

extension ValueKind where Value == String? {
    /// A regular expression (ICU syntax, as `NSRegularExpression` takes it); empty means unset.
    static var optionalRegex: Self {
        .init(placeholder: "REGEX", accepted: "a regular expression such as (?i)ssn=[0-9-]+, or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  do {
                      _ = try NSRegularExpression(pattern: text)
                  } catch {
                      throw ValueRejection("it is not a valid regular expression")
                  }
                  return text
              })
    }
}

extension ValueKind where Value == Double {
    /// A number from 0 to 1.
    static var ratio: Self {
        .init(placeholder: "RATIO", accepted: "a number from 0 to 1 such as 0.1",
              parse: { (text) throws(ValueRejection) in
                  guard let value = Double(text), value.isFinite, (0...1).contains(value) else { throw ValueRejection() }
                  return value
              })
    }
}
