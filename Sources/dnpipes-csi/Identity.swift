import GRPCCore
import SwiftProtobuf

/// CSI Identity: who the plugin is, that it has no Controller service (volumes are static: a volume is a
/// set of pipes that already exist in the cluster, or come to exist when written), and whether it is ready.
struct IdentityService: Csi_V1_Identity.SimpleServiceProtocol {
    static let driverName = "dnpipes.csi.io"
    static let version = "0.1.0"

    let volumes: Volumes

    func getPluginInfo(request: Csi_V1_GetPluginInfoRequest, context: ServerContext) async throws -> Csi_V1_GetPluginInfoResponse {
        var response = Csi_V1_GetPluginInfoResponse()
        response.name = Self.driverName
        response.vendorVersion = Self.version
        return response
    }

    /// No capability at all: no CONTROLLER_SERVICE, so the external provisioner and attacher are not needed
    /// and Kubernetes never asks to create, delete or attach a volume.
    func getPluginCapabilities(request: Csi_V1_GetPluginCapabilitiesRequest, context: ServerContext) async throws
        -> Csi_V1_GetPluginCapabilitiesResponse {
        Csi_V1_GetPluginCapabilitiesResponse()
    }

    /// Ready once the volumes of an earlier run were adopted and a mount could be made: /dev/fuse opens, the
    /// dnpipes binary is there, the state directory is writable.
    func probe(request: Csi_V1_ProbeRequest, context: ServerContext) async throws -> Csi_V1_ProbeResponse {
        var response = Csi_V1_ProbeResponse()
        response.ready = Google_Protobuf_BoolValue(await volumes.canMount())
        return response
    }
}
