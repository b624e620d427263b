/// Resolves `TracegateSettings` from the command line, the environment and an optional config
/// file, in that order of precedence, over the table's defaults. Pure: all input is passed in.
public enum SettingsLoader {
    /// Loads and validates every setting.
    ///
    /// - Parameters:
    ///   - arguments: the command line after the program name and subcommand.
    ///   - environment: the process environment (only `TRACEGATE_*` and the table's variables are read).
    ///   - readFile: returns the contents of the config file at a path; called only when `--config`
    ///     or `TRACEGATE_CONFIG` names one.
    ///   - requireUpstream: false for commands that do not proxy (`push`), so `upstream` may be absent.
    /// - Throws: `ConfigError` naming the source, key, bad value and what is accepted.
    public static func load(
        arguments: [String],
        environment: [String: String],
        readFile: (String) throws -> String,
        requireUpstream: Bool = true
    ) throws(ConfigError) -> TracegateSettings {
        let flags = try CommandLineFlags.parse(arguments)
        let env = try EnvironmentSettings.parse(environment)

        var fileEntries: [ConfigFile.Entry] = []
        var filePath = ""
        if let (path, source) = configFile(flags: flags, environment: env) {
            let contents: String
            do {
                contents = try readFile(path)
            } catch {
                throw ConfigError(source: source, key: nil,
                                  message: "cannot read config file '\(path)': \(ErrorReason.describe(error))")
            }
            filePath = path
            fileEntries = try ConfigFile.parse(
                contents, path: path, knownKeys: SettingsTable.all.map(\.key), sectionKeys: RouteSettings.keys)
        }

        // Lowest precedence first, so each later source overrides; every given value is validated.
        var settings = SettingsTable.defaults()
        var given: Set<String> = []
        var sources: [String: ConfigError.Source] = [:]
        func apply(_ setting: SettingDescriptor, _ text: String, _ source: ConfigError.Source) throws(ConfigError) {
            do {
                try setting.apply(text, to: &settings)
            } catch {
                throw invalidValue(text, for: setting, source: source, rejection: error)
            }
            given.insert(setting.key)
            sources[setting.key] = source
        }
        settings.routes = try RouteSettings.routes(from: fileEntries, path: filePath)
        for entry in fileEntries where entry.section == nil {
            guard let setting = SettingsTable.byKey[entry.key] else { continue }
            try apply(setting, entry.value, .file(path: filePath, line: entry.line))
        }
        for value in env.values {
            try apply(value.setting, value.text, .environment(value.setting.environmentVariable))
        }
        for value in flags.values {
            try apply(value.setting, value.text, .flag(value.flag))
        }

        for setting in SettingsTable.all where setting.defaultValue == .required && !given.contains(setting.key) {
            if !requireUpstream && setting.key == "upstream" { continue }
            throw ConfigError(
                source: .none, key: setting.key,
                message: "missing required setting \(setting.key): set \(setting.key) in the config file, "
                    + "\(setting.environmentVariable) in the environment, or \(setting.flag) on the command line")
        }
        if (settings.tlsCertFile == nil) != (settings.tlsKeyFile == nil) {
            let missing = settings.tlsCertFile == nil ? "tls_cert_file" : "tls_key_file"
            throw ConfigError(
                source: .none, key: missing,
                message: "missing setting \(missing): tls_cert_file and tls_key_file go together (set both to serve HTTPS, or neither)")
        }
        if let path = settings.feedbackPath, let route = settings.routes.first(where: { $0.pathPrefix == path }) {
            throw ConfigError(
                source: sources["feedback_path"] ?? .none, key: "feedback_path",
                message: "feedback_path \(path) is also the path_prefix of route '\(route.name)': choose a path no route serves")
        }
        try readIdentityHashKey(into: &settings, source: sources["identity_hash_key_file"] ?? .none, readFile: readFile)
        return settings
    }

    /// The key must exist when ids are pseudonymised, and is read now so a bad one stops start-up.
    private static func readIdentityHashKey(
        into settings: inout TracegateSettings, source: ConfigError.Source, readFile: (String) throws -> String
    ) throws(ConfigError) {
        guard settings.identityHash == .hmacSHA256 else {
            if settings.identityHashKeyFile != nil {
                throw ConfigError(
                    source: source, key: "identity_hash_key_file",
                    message: "identity_hash_key_file is set but identity_hash is off: set identity_hash = hmac-sha256 to pseudonymise ids, or remove the key file")
            }
            return
        }
        guard let path = settings.identityHashKeyFile else {
            throw ConfigError(
                source: .none, key: "identity_hash_key_file",
                message: "missing setting identity_hash_key_file: identity_hash = hmac-sha256 needs a key file (at least 16 characters, such as the output of openssl rand -hex 32)")
        }
        var key: String
        do {
            key = try readFile(path)
        } catch {
            throw ConfigError(
                source: source, key: "identity_hash_key_file",
                message: "cannot read identity_hash_key_file '\(path)': \(ErrorReason.describe(error))")
        }
        if key.hasSuffix("\n") { key.removeLast() }  // also drops a "\r\n", one grapheme
        guard key.utf8.count >= 16 else {
            throw ConfigError(
                source: source, key: "identity_hash_key_file",
                message: "identity_hash_key_file '\(path)' holds \(key.utf8.count) bytes: expected a key of at least 16 characters, such as the output of openssl rand -hex 32")
        }
        settings.identityHashKey = Array(key.utf8)
    }

    /// Help text listing every setting: flag, environment variable, default and one-line doc.
    public static var usage: String { Usage.text }

    /// The config file path and where it was named: the flag wins over the environment.
    private static func configFile(
        flags: CommandLineFlags.Parsed, environment: EnvironmentSettings.Parsed
    ) -> (String, ConfigError.Source)? {
        if let path = flags.configPath { return (path, .flag(SettingsTable.configFlag)) }
        if let path = environment.configPath { return (path, .environment(SettingsTable.configEnvironmentVariable)) }
        return nil
    }

    private static func invalidValue(
        _ text: String, for setting: SettingDescriptor, source: ConfigError.Source, rejection: ValueRejection
    ) -> ConfigError {
        let reason = rejection.reason.map { "\($0); " } ?? ""
        return ConfigError(
            source: source, key: setting.key,
            message: "invalid value '\(redacted(text))' for \(setting.key): \(reason)expected \(setting.accepted)")
    }

    /// The value as echoed in an error, with any URL user info (credentials) masked.
    private static func redacted(_ text: String) -> String {
        guard let scheme = text.firstRange(of: "://") else { return text }
        let authorityEnd = text[scheme.upperBound...].firstIndex(of: "/") ?? text.endIndex
        guard let at = text[scheme.upperBound..<authorityEnd].lastIndex(of: "@") else { return text }
        return text[..<scheme.upperBound] + "***" + text[at...]
    }
}
