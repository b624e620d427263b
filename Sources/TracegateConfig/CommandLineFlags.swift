/// Splits the command line into setting values: `--key VALUE`, `--key=VALUE`, bare booleans, `--config`.
enum CommandLineFlags {
    /// One setting given on the command line, with the flag as written (for error messages).
    struct Value {
        var setting: SettingDescriptor
        var text: String
        var flag: String
    }

    struct Parsed {
        var configPath: String?
        var values: [Value] = []
    }

    /// Parses `arguments` (after the program name and subcommand). Refuses unknown flags,
    /// flags given twice, flags missing their value, and positional arguments.
    static func parse(_ arguments: [String]) throws(ConfigError) -> Parsed {
        var parsed = Parsed()
        var seen: Set<String> = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-") else {
                throw ConfigError(source: .none, key: nil,
                                  message: "unexpected argument '\(argument)': settings are given as --key VALUE or --key=VALUE")
            }
            let body = argument.drop { $0 == "-" }
            let equals = body.firstIndex(of: "=")
            let flag = "--" + body[..<(equals ?? body.endIndex)]
            let inlineValue = equals.map { String(body[body.index(after: $0)...]) }
            guard argument.hasPrefix("--"), flag.count > 2,
                  flag == SettingsTable.configFlag || SettingsTable.byFlag[flag] != nil
            else {
                throw unknownFlag(argument.prefix { $0 != "=" })
            }
            guard seen.insert(flag).inserted else {
                throw ConfigError(source: .flag(flag), key: SettingsTable.byFlag[flag]?.key,
                                  message: "given more than once")
            }

            guard let setting = SettingsTable.byFlag[flag] else {
                // --config PATH
                guard let path = inlineValue ?? nextValue(arguments, &index), !path.isEmpty else {
                    throw ConfigError(source: .flag(flag), key: nil, message: "missing value; expected the path of a config file")
                }
                parsed.configPath = path
                continue
            }
            let text: String
            if let inlineValue {
                text = inlineValue
            } else if setting.isBoolean {
                // Bare `--preserve-host` means true; `--preserve-host false` is also accepted.
                if index < arguments.count, !arguments[index].hasPrefix("-") {
                    text = arguments[index]
                    index += 1
                } else {
                    text = "true"
                }
            } else if let next = nextValue(arguments, &index) {
                text = next
            } else {
                throw ConfigError(source: .flag(flag), key: setting.key,
                                  message: "missing value; expected \(setting.accepted)")
            }
            parsed.values.append(Value(setting: setting, text: text, flag: flag))
        }
        return parsed
    }

    /// The next argument as a value, unless it is absent or looks like another flag.
    private static func nextValue(_ arguments: [String], _ index: inout Int) -> String? {
        guard index < arguments.count, !arguments[index].hasPrefix("--") else { return nil }
        defer { index += 1 }
        return arguments[index]
    }

    private static func unknownFlag(_ flag: Substring) -> ConfigError {
        let candidates = SettingsTable.all.map(\.flag) + [SettingsTable.configFlag]
        let hint = Suggestions.closest(to: String(flag), among: candidates).map { " (did you mean \($0)?)" } ?? ""
        return ConfigError(source: .none, key: nil, message: "unknown flag \(flag)\(hint)")
    }
}
