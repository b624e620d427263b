import TracegateTrace

/// Value kinds of the tracing and MLflow settings.
extension ValueKind where Value == String? {
    /// Any text; empty means unset (nil).
    static var optionalText: Self {
        .init(placeholder: "TEXT", accepted: "any text, or nothing to leave it unset",
              parse: { (text) throws(ValueRejection) in text.isEmpty ? nil : text })
    }

    /// An http(s) URL of an MLflow tracking server; empty means unset (traces then go to the trace file).
    static var optionalTrackingURI: Self {
        .init(placeholder: "URL",
              accepted: "an http:// or https:// tracking server URL such as http://127.0.0.1:5000, or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  guard let url = UpstreamURL.parse(text) else {
                      throw ValueRejection("tracegate sends traces over HTTP to a tracking server")
                  }
                  return url.description
              })
    }

    /// A name for MLflow's Source column: up to 250 characters, no `/` (the column shows only what
    /// follows the last one) and no control characters; empty means automatic.
    static var optionalSourceName: Self {
        .init(placeholder: "NAME", accepted: "a name of at most 250 characters without / or control characters, or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  guard text.count <= 250, !text.contains("/"), !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
                  else { throw ValueRejection() }
                  return text
              })
    }

    /// A numeric MLflow experiment id; empty means unset.
    static var optionalExperimentID: Self {
        .init(placeholder: "ID", accepted: "a numeric experiment id such as 0 or 42, or nothing",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  guard text.allSatisfy(\.isASCIIDigit) else { throw ValueRejection() }
                  return text
              })
    }
}

extension ValueKind where Value == String {
    /// A source type such as PROXY, JOB or LOCAL: letters, digits and `_`, at most 32.
    static var sourceType: Self {
        .init(placeholder: "TYPE", accepted: "a word of letters, digits and _ such as PROXY, JOB or LOCAL",
              parse: { (text) throws(ValueRejection) in
                  guard !text.isEmpty, text.count <= 32, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
                  else { throw ValueRejection() }
                  return text
              })
    }
}

/// A `key=value` pair list of trace tags, or `Header=tag` pairs.
public struct NamedPairs: Sendable, Equatable {
    public var pairs: [(String, String)]
    public init(_ pairs: [(String, String)]) { self.pairs = pairs }
    public static func == (a: Self, b: Self) -> Bool { a.pairs.elementsEqual(b.pairs, by: { $0 == $1 }) }
}

extension ValueKind where Value == NamedPairs {
    /// `environment=production,app.version=1.2.3`: tag keys up to 250 characters, values up to 8000.
    static var tagList: Self {
        .init(placeholder: "K=V,...", accepted: "comma-separated key=value pairs such as environment=production,app.version=1.2.3",
              parse: { (text) throws(ValueRejection) in
                  try NamedPairs(pairs(text).map { (key, value) throws(ValueRejection) in
                      guard key.count <= 250, value.count <= 8000 else { throw ValueRejection("a tag key is over 250 or a value over 8000 characters") }
                      guard !key.hasPrefix("mlflow.") else { throw ValueRejection("tag keys starting with 'mlflow.' are reserved by MLflow") }
                      return (key, value)
                  })
              })
    }

    /// `X-Tenant=tenant,X-App-Version=app.version`: request header → tag key.
    static var headerTagList: Self {
        .init(placeholder: "HEADER=TAG,...", accepted: "comma-separated Header=tag pairs such as X-Tenant=tenant",
              parse: { (text) throws(ValueRejection) in
                  try NamedPairs(pairs(text).map { (header, tag) throws(ValueRejection) in
                      _ = try ValueParsers.token(header)
                      guard tag.count <= 250, !tag.hasPrefix("mlflow.") else { throw ValueRejection("tag '\(tag)' is reserved or too long") }
                      return (header, tag)
                  })
              })
    }

    private static func pairs(_ text: String) throws(ValueRejection) -> [(String, String)] {
        var result: [(String, String)] = []
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            let key = parts.first.map { String($0.trimmingCharacters(in: .whitespaces)) } ?? ""
            guard parts.count == 2, !key.isEmpty else { throw ValueRejection("'\(item)' is not key=value") }
            result.append((key, String(parts[1].trimmingCharacters(in: .whitespaces))))
        }
        return result
    }
}

import Foundation

extension ValueKind where Value == [IdentitySource] {
    /// `jwt:sub, header:X-User-ID, body:user`; empty means the header setting.
    static func identitySources(forSessions: Bool) -> Self {
        .init(placeholder: "SOURCES", accepted: IdentitySource.accepted + ", or nothing for the header setting",
              parse: { (text) throws(ValueRejection) in
                  do {
                      return try IdentitySource.parseList(text, forSessions: forSessions)
                  } catch let error as IdentitySourceError {
                      throw ValueRejection(error.description)
                  } catch {
                      throw ValueRejection()
                  }
              })
    }
}

extension ValueKind where Value == String? {
    /// A path such as `/_tracegate/feedback`; empty means off.
    static var optionalFeedbackPath: Self {
        .init(placeholder: "PATH", accepted: "a path starting with / such as /_tracegate/feedback, or nothing to turn feedback off",
              parse: { (text) throws(ValueRejection) in
                  if text.isEmpty { return nil }
                  guard text.hasPrefix("/"), text.count > 1, !text.hasSuffix("/"),
                      text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0 != "?" && $0 != "#" && $0.value != 0x7F })
                  else { throw ValueRejection() }
                  return text
              })
    }
}

extension ValueKind where Value == [String] {
    /// `https://chat.example.com,http://localhost:3000`: web origins, without paths.
    static var originList: Self {
        .init(placeholder: "ORIGINS", accepted: "comma-separated origins such as https://chat.example.com,http://localhost:3000, or nothing",
              parse: { (text) throws(ValueRejection) in
                  let origins = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                  for origin in origins {
                      let lower = origin.lowercased()
                      guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
                          throw ValueRejection("'\(origin)' is not an http:// or https:// origin")
                      }
                      let authority = lower.drop(while: { $0 != "/" }).dropFirst(2)
                      guard !authority.isEmpty, !authority.contains("/"), !authority.contains("?"), !authority.contains("*") else {
                          throw ValueRejection("'\(origin)' must be scheme://host[:port], without a path or wildcard")
                      }
                  }
                  return origins
              })
    }
}
