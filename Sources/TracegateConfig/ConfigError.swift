import Foundation

/// A setting that could not be accepted: where it came from, which key, and why.
///
/// `description` is the one line shown to the user, e.g.
/// `proxy.conf:12: unknown key 'upstrem' (did you mean 'upstream'?)`.
public struct ConfigError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// Where the offending text came from.
    public enum Source: Equatable, Sendable {
        /// A line of the config file (path as given, 1-based line).
        case file(path: String, line: Int)
        /// An environment variable, by name.
        case environment(String)
        /// A command-line flag, e.g. `--listen`.
        case flag(String)
        /// Not tied to one place (e.g. a missing required setting, an unknown flag).
        case none
    }

    public var source: Source
    /// The setting key concerned, or the unknown key as written; nil when no key is involved.
    public var key: String?
    /// The message without the source prefix.
    public var message: String

    public init(source: Source, key: String?, message: String) {
        self.source = source
        self.key = key
        self.message = message
    }

    /// The full one-line message shown to the user: the source, then the message.
    public var description: String {
        switch source {
        case .file(let path, let line): "\(path):\(line): \(message)"
        case .environment(let name): "environment variable \(name): \(message)"
        case .flag(let flag): "flag \(flag): \(message)"
        case .none: message
        }
    }

    public var errorDescription: String? { description }
}
