import XCTest

@testable import TracegateConfig

final class OpenTelemetryExportTests: XCTestCase {
    func testNoEndpointMeansNoExport() throws {
        XCTAssertNil(try OpenTelemetryExport.resolve(endpoint: nil, tracesEndpoint: "", headers: "a=b", serviceName: nil, resourceAttributes: nil))
    }

    func testTracesEndpointIsUsedAsGivenAndTheGeneralOneGetsThePath() throws {
        let general = try XCTUnwrap(OpenTelemetryExport.resolve(
            endpoint: "http://collector:4318/", tracesEndpoint: nil, headers: nil, serviceName: nil, resourceAttributes: nil))
        XCTAssertEqual(general.tracesEndpoint, "http://collector:4318/v1/traces")
        let specific = try XCTUnwrap(OpenTelemetryExport.resolve(
            endpoint: "http://collector:4318", tracesEndpoint: "https://otel.example.com/custom/traces", headers: nil,
            serviceName: nil, resourceAttributes: nil))
        XCTAssertEqual(specific.tracesEndpoint, "https://otel.example.com/custom/traces")
    }

    func testHeadersAndResourceAttributesArePercentDecodedPairs() throws {
        let export = try XCTUnwrap(OpenTelemetryExport.resolve(
            endpoint: "http://c:4318", tracesEndpoint: nil, headers: "api-key=s%3Dcret, x-team = ml ",
            serviceName: nil, resourceAttributes: "service.name=chat-gw,deployment.environment=prod%20eu"))
        XCTAssertEqual(export.headers, [.init(name: "api-key", value: "s=cret"), .init(name: "x-team", value: "ml")])
        XCTAssertEqual(export.serviceName, "chat-gw")
        XCTAssertEqual(export.resourceAttributes, ["deployment.environment": "prod eu"])
    }

    func testServiceNameVariableWinsAndDefaultsToTracegate() throws {
        let named = try XCTUnwrap(OpenTelemetryExport.resolve(
            endpoint: "http://c", tracesEndpoint: nil, headers: nil, serviceName: "gw", resourceAttributes: "service.name=x"))
        XCTAssertEqual(named.serviceName, "gw")
        let unnamed = try XCTUnwrap(OpenTelemetryExport.resolve(
            endpoint: "http://c", tracesEndpoint: nil, headers: nil, serviceName: nil, resourceAttributes: nil))
        XCTAssertEqual(unnamed.serviceName, "tracegate")
    }

    func testMalformedListsAreRefusedWithTheReason() {
        XCTAssertThrowsError(try OpenTelemetryExport.resolve(
            endpoint: "http://c", tracesEndpoint: nil, headers: "novalue", serviceName: nil, resourceAttributes: nil)
        ) { error in
            XCTAssertEqual((error as? ValueRejection)?.reason, "'novalue' is not a header of the form key=value")
        }
        XCTAssertThrowsError(try OpenTelemetryExport.resolve(
            endpoint: "http://c", tracesEndpoint: nil, headers: nil, serviceName: nil, resourceAttributes: "a=%zz"))
    }
}
