/// One row of the settings table: a key with its doc line, default, value kind and environment
/// variable, plus how to store a parsed value into `TracegateSettings`.
struct SettingDescriptor: Sendable {
    /// The default, written exactly as in proxy.conf.example.
    enum Default: Sendable, Equatable {
        /// Parsed like any other value; shown as `key = text` in the example file.
        case value(String)
        /// No default: must be given; shown as `# key = ...` in the example file.
        case required
    }

    /// Key in the config file, e.g. `upstream_pool_size`.
    let key: String
    /// One-line description for `--help`.
    let doc: String
    let defaultValue: Default
    /// Environment variable, `TRACEGATE_` + uppercased key unless overridden.
    let environmentVariable: String
    /// Placeholder after the flag in `--help`.
    let placeholder: String
    /// What is accepted, phrased to follow "expected".
    let accepted: String
    /// Boolean settings may be given as a bare flag.
    let isBoolean: Bool
    private let store: @Sendable (inout TracegateSettings, String) throws(ValueRejection) -> Void

    init<Value: Sendable>(
        _ key: String,
        _ field: WritableKeyPath<TracegateSettings, Value> & Sendable,
        _ kind: ValueKind<Value>,
        default defaultValue: Default,
        environment: String? = nil,
        doc: String
    ) {
        self.key = key
        self.doc = doc
        self.defaultValue = defaultValue
        self.environmentVariable = environment ?? "TRACEGATE_" + key.uppercased()
        self.placeholder = kind.placeholder
        self.accepted = kind.accepted
        self.isBoolean = kind.isBoolean
        self.store = { (settings, text) throws(ValueRejection) in
            settings[keyPath: field] = try kind.parse(text)
        }
    }

    /// Command-line flag: `--` + key with `_` turned into `-`.
    var flag: String {
        "--" + String(key.map { $0 == "_" ? "-" : $0 })
    }

    /// Parses `text` and stores it in `settings`.
    func apply(_ text: String, to settings: inout TracegateSettings) throws(ValueRejection) {
        try store(&settings, text)
    }
}
